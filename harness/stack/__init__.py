"""The local stack: what API Gateway, Lambda and DynamoDB would do, on loopback."""
