output "smtp_endpoint" {
  description = "Where applications submit mail (port 587, STARTTLS)."
  value       = aws_lb.smtp.dns_name
}

output "instance_ids" {
  value = aws_instance.relay[*].id
}

output "security_group_id" {
  value = aws_security_group.relay.id
}
