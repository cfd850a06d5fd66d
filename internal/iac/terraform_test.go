package iac

import (
	"slices"
	"testing"

	"github.com/hashicorp/hcl/v2/hclsyntax"
)

const relayModule = "terraform/modules/relay"

func TestHealthPortOpenToTheLoadBalancerAlways(t *testing.T) {
	blocks := moduleBlocks(t, relayModule)
	sg := findBlock(t, blocks, "resource", "aws_security_group", "relay")

	// A plain ingress block (not a dynamic one, which monitoring_cidrs may
	// switch off) for the health port from the load balancer's subnets.
	var rule *hclsyntax.Block
	for _, in := range nestedBlocks(sg, "ingress") {
		if refersTo(attr(t, in, "from_port"), "var.health_port") {
			rule = in
		}
	}
	if rule == nil {
		t.Fatal("no unconditional ingress rule for var.health_port")
	}
	if !refersTo(attr(t, rule, "to_port"), "var.health_port") {
		t.Error("the health rule's to_port is not var.health_port")
	}
	cidrs := attr(t, rule, "cidr_blocks")
	if refersTo(cidrs, "var.monitoring_cidrs") || !refersTo(cidrs, "data.aws_subnet") {
		t.Errorf("%s: the health rule must allow the load balancer's subnets (data.aws_subnet), not monitoring_cidrs: %v", cidrs.Range(), references(cidrs))
	}
	tg := findBlock(t, blocks, "resource", "aws_lb_target_group", "smtp")
	healthCheck := nestedBlocks(tg, "health_check")
	if len(healthCheck) != 1 || !refersTo(attr(t, healthCheck[0], "port"), "var.health_port") {
		t.Error("the target group's health check does not use var.health_port")
	}
	lbSubnets := references(attr(t, findBlock(t, blocks, "resource", "aws_lb", "smtp"), "subnets"))
	subnetData := references(attr(t, findBlock(t, blocks, "data", "aws_subnet", "lb"), "for_each"))
	if !slices.Equal(lbSubnets, subnetData) {
		t.Errorf("the health rule's subnets (%v) are not the load balancer's (%v)", subnetData, lbSubnets)
	}
}
