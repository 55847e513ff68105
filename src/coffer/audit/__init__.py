"""The audit trail: one record for every KMS request, success or failure."""
