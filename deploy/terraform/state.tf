# The state store (CONTROLLER_STATE_STORE=dynamodb://TABLE) and, with leader election, the lease:
# one item per environment, partition key `environment`. It holds the Terraform runs in flight:
# point-in-time recovery is on, and deletion is refused by default.
resource "aws_dynamodb_table" "state" {
  name                        = var.state_table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "environment"
  deletion_protection_enabled = var.state_table_deletion_protection

  attribute {
    name = "environment"
    type = "S"
  }
  point_in_time_recovery {
    enabled = true
  }
  server_side_encryption {
    enabled     = true
    kms_key_arn = var.kms_key_arn
  }
  tags = var.tags
}
