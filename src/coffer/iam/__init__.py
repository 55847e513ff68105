"""Identity and access: tokens, principals and the grants they hold."""
