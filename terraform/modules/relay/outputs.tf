output "smtp_endpoint" {
  description = "Where applications submit mail (port 587, STARTTLS)."
  value       = aws_lb.smtp.dns_name
}

output "iam_role_arn" {
  description = "IAM role of the instances: give it to modules/vault (relay_iam_role_arns) so they can log in."
  value       = aws_iam_role.relay.arn
}

output "autoscaling_group_name" {
  description = "Auto Scaling group of the instances (aws autoscaling start-instance-refresh to roll them by hand)."
  value       = aws_autoscaling_group.relay.name
}

output "security_group_id" {
  value = aws_security_group.relay.id
}
