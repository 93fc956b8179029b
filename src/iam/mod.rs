//! RDS IAM authentication tokens (placeholder; the iam helper owns this module).
