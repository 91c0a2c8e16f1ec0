package policy_test

// Every connectivity expectation of every ClusterNetworkPolicy conformance test of
// sigs.k8s.io/network-policy-api v0.3.0 (conformance/tests/*.go), in the order the tests
// make them: each PokeServer is a poke (client pod, server pod, protocol, port, whether it
// connects) and each PATCH (or delete) a mutate step between them. The test and step names
// are upstream's. Transcribed mechanically from the Go sources (the PokeServer calls and the
// mutations, rule swaps, priority and action edits, named ports, namespace relabels,
// prepended CIDR rules, pod labels set and removed (t.Cleanup's at the end of its step), a
// deleted NetworkPolicy), then checked by hand against each test's
// comments.

import (
	"testing"

	"github.com/podwall/podwall/policy"
)

var conformanceTests = []conformanceTest{
	{name: "CNPAdminTierEgressNamedPort", manifests: []string{"base/admin_tier/standard-egress-tcp-rules.yaml"}, steps: []cnpStep{
		{name: "Should support an 'allow-egress' policy for named port", do: []act{
			mutate(namedPort("egress-tcp", policy.Egress, 5, "web")),
			poke("gryffindor/harry-potter-0", "hufflepuff/cedric-diggory-1", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-1", "tcp", 8080, false),
		}},
	}},
	{name: "CNPAdminTierEgressNodePeers", manifests: []string{"base/admin_tier/experimental-egress-selector-rules.yaml"}, steps: []cnpStep{
		{name: "Should support an 'allow-egress' rule policy for egress-node-peer", do: []act{
			poke("gryffindor/harry-potter-1", "forbidden-forrest/centaur-1", "tcp", hostPorts[0], true),
		}},
		{name: "Should support a 'pass-egress' rule policy for egress-node-peer", do: []act{
			poke("gryffindor/harry-potter-1", "forbidden-forrest/centaur-1", "udp", hostPorts[2], true),
		}},
		{name: "Should support a 'deny-egress' rule policy for egress-node-peer", do: []act{
			poke("gryffindor/harry-potter-1", "forbidden-forrest/centaur-1", "tcp", hostPorts[1], false),
			poke("gryffindor/harry-potter-1", "forbidden-forrest/centaur-1", "udp", hostPorts[4], false),
			poke("gryffindor/harry-potter-1", "forbidden-forrest/centaur-1", "sctp", hostPorts[6], false),
		}},
	}},
	{name: "CNPAdminTierIngressNamedPort", manifests: []string{"base/admin_tier/standard-ingress-udp-rules.yaml"}, steps: []cnpStep{
		{name: "Should support an 'allow-ingress' policy for named port", do: []act{
			mutate(namedPort("ingress-udp", policy.Ingress, 5, "dns")),
			poke("gryffindor/harry-potter-0", "hufflepuff/cedric-diggory-1", "udp", 53, true),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-1", "udp", 5353, false),
		}},
	}},
	{name: "CNPAdminTierEgressInlineCIDRPeers", manifests: []string{"base/admin_tier/standard-egress-inline-cidr-rules.yaml"}, steps: []cnpStep{
		{name: "Should support a 'deny-egress' rule policy for egress-cidr-peer", do: []act{
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-0", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-0", "udp", 53, false),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-0", "sctp", 9003, false),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-0", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-0", "udp", 53, false),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-0", "sctp", 9003, false),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "udp", 53, true),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "sctp", 9003, true),
			mutate(relabelNamespace("slytherin", map[string]string{"conformance-house": "denied-namespace-label"})),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "udp", 53, false),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "sctp", 9003, false),
			mutate(relabelNamespace("slytherin", map[string]string{"conformance-house": "slytherin"})),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "udp", 53, true),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "sctp", 9003, true),
		}},
		{name: "Should support an 'allow-egress' rule policy for egress-cidr-peer", do: []act{
			mutate(prependAcceptToPods("inline-cidr-as-peers-example", "ravenclaw/luna-lovegood-0", "hufflepuff/cedric-diggory-0")),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-0", "udp", 53, true),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-0", "sctp", 9003, true),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-0", "udp", 53, true),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-0", "sctp", 9003, true),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-1", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-1", "udp", 53, false),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-1", "sctp", 9003, false),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-1", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-1", "udp", 53, false),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-1", "sctp", 9003, false),
		}},
	}},
	{name: "CNPAdminTierEgressSCTP", manifests: []string{"base/admin_tier/standard-egress-sctp-rules.yaml"}, steps: []cnpStep{
		{name: "Should support an 'allow-egress' policy for SCTP protocol; ensure rule ordering is respected", do: []act{
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-0", "sctp", 9003, true),
			poke("ravenclaw/luna-lovegood-1", "gryffindor/harry-potter-0", "sctp", 9005, true),
		}},
		{name: "Should support an 'allow-egress' policy for SCTP protocol at the specified port", do: []act{
			poke("ravenclaw/luna-lovegood-0", "hufflepuff/cedric-diggory-1", "sctp", 9003, true),
			poke("ravenclaw/luna-lovegood-1", "hufflepuff/cedric-diggory-1", "sctp", 9005, false),
		}},
		{name: "Should support an 'deny-egress' policy for SCTP protocol; ensure rule ordering is respected", do: []act{
			mutate(swapRules("egress-sctp", policy.Egress, 0, 1)),
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-1", "sctp", 9003, false),
			poke("ravenclaw/luna-lovegood-1", "gryffindor/harry-potter-1", "sctp", 9005, false),
		}},
		{name: "Should support a 'deny-egress' policy for SCTP protocol at the specified port", do: []act{
			poke("ravenclaw/luna-lovegood-0", "slytherin/draco-malfoy-0", "sctp", 9003, false),
			poke("ravenclaw/luna-lovegood-1", "slytherin/draco-malfoy-0", "sctp", 9005, true),
		}},
		{name: "Should support an 'pass-egress' policy for SCTP protocol; ensure rule ordering is respected", do: []act{
			mutate(swapRules("egress-sctp", policy.Egress, 0, 2)),
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-1", "sctp", 9003, true),
			poke("ravenclaw/luna-lovegood-1", "gryffindor/harry-potter-1", "sctp", 9005, true),
		}},
		{name: "Should support a 'pass-egress' policy for SCTP protocol at the specified port", do: []act{
			mutate(swapRules("egress-sctp", policy.Egress, 3, 4)),
			poke("ravenclaw/luna-lovegood-0", "slytherin/draco-malfoy-0", "sctp", 9003, true),
			poke("ravenclaw/luna-lovegood-1", "slytherin/draco-malfoy-0", "sctp", 9005, true),
		}},
	}},
	{name: "CNPAdminTierEgressTCP", manifests: []string{"base/admin_tier/standard-egress-tcp-rules.yaml"}, steps: []cnpStep{
		{name: "Should support an 'allow-egress' policy for TCP protocol; ensure rule ordering is respected", do: []act{
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-0", "tcp", 8080, true),
		}},
		{name: "Should support an 'allow-egress' policy for TCP protocol at the specified port", do: []act{
			poke("gryffindor/harry-potter-0", "hufflepuff/cedric-diggory-1", "tcp", 8080, true),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-1", "tcp", 80, false),
		}},
		{name: "Should not affect ingress traffic when only egress rules are specified", do: []act{
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-0", "tcp", 80, true),
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-1", "tcp", 80, true),
		}},
		{name: "Should support an 'deny-egress' policy for TCP protocol; ensure rule ordering is respected", do: []act{
			mutate(swapRules("egress-tcp", policy.Egress, 0, 1)),
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-1", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-1", "tcp", 8080, false),
		}},
		{name: "Should support a 'deny-egress' policy for TCP protocol at the specified port", do: []act{
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "tcp", 8080, true),
		}},
		{name: "Should support an 'pass-egress' policy for TCP protocol; ensure rule ordering is respected", do: []act{
			mutate(swapRules("egress-tcp", policy.Egress, 0, 2)),
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-0", "tcp", 8080, true),
		}},
		{name: "Should support a 'pass-egress' policy for TCP protocol at the specified port", do: []act{
			mutate(swapRules("egress-tcp", policy.Egress, 3, 4)),
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "tcp", 8080, true),
		}},
	}},
	{name: "CNPAdminTierEgressUDP", manifests: []string{"base/admin_tier/standard-egress-udp-rules.yaml"}, steps: []cnpStep{
		{name: "Should support an 'allow-egress' policy for UDP protocol; ensure rule ordering is respected", do: []act{
			poke("hufflepuff/cedric-diggory-0", "ravenclaw/luna-lovegood-0", "udp", 53, true),
			poke("hufflepuff/cedric-diggory-1", "ravenclaw/luna-lovegood-0", "udp", 5353, true),
		}},
		{name: "Should support an 'allow-egress' policy for UDP protocol at the specified port", do: []act{
			poke("hufflepuff/cedric-diggory-0", "gryffindor/harry-potter-1", "udp", 53, true),
			poke("hufflepuff/cedric-diggory-1", "gryffindor/harry-potter-1", "udp", 5353, false),
		}},
		{name: "Should support an 'deny-egress' policy for UDP protocol; ensure rule ordering is respected", do: []act{
			mutate(swapRules("egress-udp", policy.Egress, 0, 1)),
			poke("hufflepuff/cedric-diggory-0", "ravenclaw/luna-lovegood-1", "udp", 53, false),
			poke("hufflepuff/cedric-diggory-1", "ravenclaw/luna-lovegood-1", "udp", 5353, false),
		}},
		{name: "Should support a 'deny-egress' policy for UDP protocol at the specified port", do: []act{
			poke("hufflepuff/cedric-diggory-0", "slytherin/draco-malfoy-0", "udp", 5353, false),
			poke("hufflepuff/cedric-diggory-1", "slytherin/draco-malfoy-0", "udp", 53, true),
		}},
		{name: "Should support an 'pass-egress' policy for UDP protocol; ensure rule ordering is respected", do: []act{
			mutate(swapRules("egress-udp", policy.Egress, 0, 2)),
			poke("hufflepuff/cedric-diggory-0", "ravenclaw/luna-lovegood-1", "udp", 5353, true),
			poke("hufflepuff/cedric-diggory-1", "ravenclaw/luna-lovegood-1", "udp", 53, true),
		}},
		{name: "Should support a 'pass-egress' policy for UDP protocol at the specified port", do: []act{
			mutate(swapRules("egress-udp", policy.Egress, 3, 4)),
			poke("hufflepuff/cedric-diggory-0", "slytherin/draco-malfoy-0", "udp", 5353, true),
			poke("hufflepuff/cedric-diggory-1", "slytherin/draco-malfoy-0", "udp", 53, true),
		}},
	}},
	{name: "CNPAdminTierGress", manifests: []string{"base/admin_tier/standard-gress-rules-combined.yaml"}, steps: []cnpStep{
		{name: "Should support an 'allow-gress' policy across different protocols", do: []act{
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-0", "udp", 53, true),
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-0", "sctp", 9003, true),
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-0", "tcp", 80, true),
			poke("ravenclaw/luna-lovegood-1", "gryffindor/harry-potter-0", "udp", 53, true),
			poke("ravenclaw/luna-lovegood-1", "gryffindor/harry-potter-0", "sctp", 9003, true),
		}},
		{name: "Should support an 'allow-gress' policy across different protocols at the specified ports", do: []act{
			poke("gryffindor/harry-potter-0", "hufflepuff/cedric-diggory-1", "tcp", 8080, true),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-1", "tcp", 80, false),
			poke("gryffindor/harry-potter-0", "hufflepuff/cedric-diggory-1", "udp", 5353, true),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-1", "udp", 53, false),
			poke("gryffindor/harry-potter-0", "hufflepuff/cedric-diggory-1", "sctp", 9003, true),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-1", "sctp", 9005, false),
			poke("hufflepuff/cedric-diggory-0", "gryffindor/harry-potter-1", "tcp", 80, true),
			poke("hufflepuff/cedric-diggory-1", "gryffindor/harry-potter-1", "tcp", 8080, false),
			poke("hufflepuff/cedric-diggory-0", "gryffindor/harry-potter-1", "udp", 5353, true),
			poke("hufflepuff/cedric-diggory-1", "gryffindor/harry-potter-1", "udp", 53, false),
			poke("hufflepuff/cedric-diggory-0", "gryffindor/harry-potter-1", "sctp", 9003, true),
			poke("hufflepuff/cedric-diggory-1", "gryffindor/harry-potter-1", "sctp", 9005, false),
		}},
		{name: "Should support an 'deny-gress' policy across different protocols", do: []act{
			mutate(swapRules("gress-rules", policy.Egress, 0, 1), swapRules("gress-rules", policy.Ingress, 0, 1)),
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-1", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-1", "udp", 53, false),
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-1", "sctp", 9003, false),
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-1", "tcp", 80, false),
			poke("ravenclaw/luna-lovegood-1", "gryffindor/harry-potter-1", "udp", 53, false),
			poke("ravenclaw/luna-lovegood-1", "gryffindor/harry-potter-1", "sctp", 9003, false),
		}},
		{name: "Should support a 'deny-gress' policy across different protocols at the specified ports", do: []act{
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "tcp", 8080, true),
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "udp", 53, false),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "udp", 5353, true),
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "sctp", 9003, false),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "sctp", 9005, true),
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "tcp", 80, false),
			poke("slytherin/draco-malfoy-1", "gryffindor/harry-potter-0", "tcp", 8080, true),
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "udp", 53, false),
			poke("slytherin/draco-malfoy-1", "gryffindor/harry-potter-0", "udp", 5353, true),
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "sctp", 9003, false),
			poke("slytherin/draco-malfoy-1", "gryffindor/harry-potter-0", "sctp", 9005, true),
		}},
		{name: "Should support an 'pass-gress' policy across different protocols", do: []act{
			mutate(swapRules("gress-rules", policy.Egress, 0, 2), swapRules("gress-rules", policy.Ingress, 0, 2)),
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-0", "udp", 5353, true),
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-0", "sctp", 9003, true),
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-0", "tcp", 80, true),
			poke("ravenclaw/luna-lovegood-1", "gryffindor/harry-potter-0", "udp", 53, true),
			poke("ravenclaw/luna-lovegood-1", "gryffindor/harry-potter-0", "sctp", 9003, true),
		}},
		{name: "Should support a 'pass-gress' policy across different protocols at the specified ports", do: []act{
			mutate(swapRules("gress-rules", policy.Egress, 3, 4), swapRules("gress-rules", policy.Ingress, 3, 4)),
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "tcp", 8080, true),
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "udp", 53, true),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "udp", 5353, true),
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "sctp", 9003, true),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "sctp", 9005, true),
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "tcp", 80, true),
			poke("slytherin/draco-malfoy-1", "gryffindor/harry-potter-0", "tcp", 8080, true),
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "udp", 53, true),
			poke("slytherin/draco-malfoy-1", "gryffindor/harry-potter-0", "udp", 5353, true),
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "sctp", 9003, true),
			poke("slytherin/draco-malfoy-1", "gryffindor/harry-potter-0", "sctp", 9005, true),
		}},
	}},
	{name: "CNPAdminTierIngressSCTP", manifests: []string{"base/admin_tier/standard-ingress-sctp-rules.yaml"}, steps: []cnpStep{
		{name: "Should support an 'allow-ingress' policy for SCTP protocol; ensure rule ordering is respected", do: []act{
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-0", "sctp", 9003, true),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-0", "sctp", 9005, true),
		}},
		{name: "Should support an 'allow-ingress' policy for SCTP protocol at the specified port", do: []act{
			poke("hufflepuff/cedric-diggory-0", "ravenclaw/luna-lovegood-1", "sctp", 9003, true),
			poke("hufflepuff/cedric-diggory-1", "ravenclaw/luna-lovegood-1", "sctp", 9005, false),
		}},
		{name: "Should support an 'deny-ingress' policy for SCTP protocol; ensure rule ordering is respected", do: []act{
			mutate(swapRules("ingress-sctp", policy.Ingress, 0, 1)),
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-1", "sctp", 9003, false),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-1", "sctp", 9005, false),
		}},
		{name: "Should support a 'deny-ingress' policy for SCTP protocol at the specified port", do: []act{
			poke("slytherin/draco-malfoy-0", "ravenclaw/luna-lovegood-0", "sctp", 9003, false),
			poke("slytherin/draco-malfoy-1", "ravenclaw/luna-lovegood-0", "sctp", 9005, true),
		}},
		{name: "Should support an 'pass-ingress' policy for SCTP protocol; ensure rule ordering is respected", do: []act{
			mutate(swapRules("ingress-sctp", policy.Ingress, 0, 2)),
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-1", "sctp", 9003, true),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-1", "sctp", 9005, true),
		}},
		{name: "Should support a 'pass-ingress' policy for SCTP protocol at the specified port", do: []act{
			mutate(swapRules("ingress-sctp", policy.Ingress, 3, 4)),
			poke("slytherin/draco-malfoy-0", "ravenclaw/luna-lovegood-0", "sctp", 9003, true),
			poke("slytherin/draco-malfoy-1", "ravenclaw/luna-lovegood-0", "sctp", 9005, true),
		}},
	}},
	{name: "CNPAdminTierIngressTCP", manifests: []string{"base/admin_tier/standard-ingress-tcp-rules.yaml"}, steps: []cnpStep{
		{name: "Should support an 'allow-ingress' policy for TCP protocol; ensure rule ordering is respected", do: []act{
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-0", "tcp", 80, true),
			poke("ravenclaw/luna-lovegood-1", "gryffindor/harry-potter-0", "tcp", 8080, true),
		}},
		{name: "Should support an 'allow-ingress' policy for TCP protocol at the specified port", do: []act{
			poke("hufflepuff/cedric-diggory-0", "gryffindor/harry-potter-1", "tcp", 80, true),
			poke("hufflepuff/cedric-diggory-1", "gryffindor/harry-potter-1", "tcp", 8080, false),
		}},
		{name: "Should not affect egress traffic when only ingress rules are specified", do: []act{
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "tcp", 80, true),
		}},
		{name: "Should support an 'deny-ingress' policy for TCP protocol; ensure rule ordering is respected", do: []act{
			mutate(swapRules("ingress-tcp", policy.Ingress, 0, 1)),
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-1", "tcp", 80, false),
			poke("ravenclaw/luna-lovegood-1", "gryffindor/harry-potter-1", "tcp", 8080, false),
		}},
		{name: "Should support a 'deny-ingress' policy for TCP protocol at the specified port", do: []act{
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "tcp", 80, false),
			poke("slytherin/draco-malfoy-1", "gryffindor/harry-potter-0", "tcp", 8080, true),
		}},
		{name: "Should support an 'pass-ingress' policy for TCP protocol; ensure rule ordering is respected", do: []act{
			mutate(swapRules("ingress-tcp", policy.Ingress, 0, 2)),
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-0", "tcp", 80, true),
			poke("ravenclaw/luna-lovegood-1", "gryffindor/harry-potter-0", "tcp", 8080, true),
		}},
		{name: "Should support a 'pass-ingress' policy for TCP protocol at the specified port", do: []act{
			mutate(swapRules("ingress-tcp", policy.Ingress, 3, 4)),
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "tcp", 80, true),
			poke("slytherin/draco-malfoy-1", "gryffindor/harry-potter-0", "tcp", 8080, true),
		}},
	}},
	{name: "CNPAdminTierIngressUDP", manifests: []string{"base/admin_tier/standard-ingress-udp-rules.yaml"}, steps: []cnpStep{
		{name: "Should support an 'allow-ingress' policy for UDP protocol; ensure rule ordering is respected", do: []act{
			poke("ravenclaw/luna-lovegood-0", "hufflepuff/cedric-diggory-0", "udp", 53, true),
			poke("ravenclaw/luna-lovegood-1", "hufflepuff/cedric-diggory-0", "udp", 5353, true),
		}},
		{name: "Should support an 'allow-ingress' policy for UDP protocol at the specified port", do: []act{
			poke("gryffindor/harry-potter-0", "hufflepuff/cedric-diggory-1", "udp", 53, true),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-1", "udp", 5353, false),
		}},
		{name: "Should support an 'deny-ingress' policy for UDP protocol; ensure rule ordering is respected", do: []act{
			mutate(swapRules("ingress-udp", policy.Ingress, 0, 1)),
			poke("ravenclaw/luna-lovegood-0", "hufflepuff/cedric-diggory-1", "udp", 53, false),
			poke("ravenclaw/luna-lovegood-1", "hufflepuff/cedric-diggory-1", "udp", 5353, false),
		}},
		{name: "Should support a 'deny-ingress' policy for UDP protocol at the specified port", do: []act{
			poke("slytherin/draco-malfoy-0", "hufflepuff/cedric-diggory-0", "udp", 5353, false),
			poke("slytherin/draco-malfoy-1", "hufflepuff/cedric-diggory-0", "udp", 53, true),
		}},
		{name: "Should support an 'pass-ingress' policy for UDP protocol; ensure rule ordering is respected", do: []act{
			mutate(swapRules("ingress-udp", policy.Ingress, 0, 2)),
			poke("ravenclaw/luna-lovegood-0", "hufflepuff/cedric-diggory-1", "udp", 5353, true),
			poke("ravenclaw/luna-lovegood-1", "hufflepuff/cedric-diggory-1", "udp", 53, true),
		}},
		{name: "Should support a 'pass-ingress' policy for UDP protocol at the specified port", do: []act{
			mutate(swapRules("ingress-udp", policy.Ingress, 3, 4)),
			poke("slytherin/draco-malfoy-0", "hufflepuff/cedric-diggory-0", "udp", 5353, true),
			poke("slytherin/draco-malfoy-1", "hufflepuff/cedric-diggory-0", "udp", 53, true),
		}},
	}},
	{name: "CNPAdminTierIntegration", manifests: []string{"base/api_integration/standard-anp-np-banp.yaml"}, steps: []cnpStep{
		{name: "Should Deny traffic from slytherin to gryffindor respecting admin CNP", do: []act{
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "tcp", 80, false),
			poke("slytherin/draco-malfoy-1", "gryffindor/harry-potter-0", "tcp", 8080, false),
		}},
		{name: "Should Deny traffic to slytherin from gryffindor respecting admin CNP", do: []act{
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "tcp", 8080, false),
		}},
		{name: "Should support a 'pass-ingress' policy for admin CNP and respect the match for network policy", do: []act{
			mutate(setAction("pass-example", policy.Ingress, 0, "Pass")),
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "tcp", 80, true),
			poke("slytherin/draco-malfoy-1", "gryffindor/harry-potter-0", "tcp", 8080, true),
		}},
		{name: "Should support a 'pass-egress' policy for admin CNP and respect the match for network policy", do: []act{
			mutate(setAction("pass-example", policy.Egress, 0, "Pass")),
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "tcp", 8080, true),
		}},
		{name: "Should support a 'pass-ingress' policy for admin CNP and respect the match for baseline cluster network policy", do: []act{
			mutate(deleteNetworkPolicy("gryffindor", "allow-gress-from-to-slytherin-to-gryffindor")),
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "tcp", 80, false),
			poke("slytherin/draco-malfoy-1", "gryffindor/harry-potter-0", "tcp", 8080, false),
		}},
		{name: "Should support a 'pass-egress' policy for admin CNP and respect the match for baseline cluster network policy", do: []act{
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "tcp", 8080, false),
		}},
	}},
	{name: "CNPAdminTierPodSelector", manifests: []string{"base/admin_tier/standard-pod-selector-rules.yaml"}, steps: []cnpStep{
		{name: "Should support pod selectors in egress peers", do: []act{
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-0", "tcp", 8080, false),
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-1", "tcp", 80, false),
		}},
		{name: "Should support pod selectors in ingress peers", do: []act{
			poke("slytherin/draco-malfoy-1", "gryffindor/harry-potter-1", "tcp", 80, false),
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "tcp", 80, true),
			mutate(setPodLabel("hufflepuff/cedric-diggory-0", "blocked")),
			poke("hufflepuff/cedric-diggory-0", "gryffindor/harry-potter-0", "tcp", 80, false),
			poke("hufflepuff/cedric-diggory-1", "gryffindor/harry-potter-0", "tcp", 80, true),
			mutate(removePodLabel("hufflepuff/cedric-diggory-0")),
			poke("hufflepuff/cedric-diggory-0", "gryffindor/harry-potter-0", "tcp", 80, true),
			mutate(setPodLabel("hufflepuff/cedric-diggory-1", "blocked")),
			poke("hufflepuff/cedric-diggory-1", "gryffindor/harry-potter-0", "tcp", 80, false),
			mutate(removePodLabel("hufflepuff/cedric-diggory-0"), removePodLabel("hufflepuff/cedric-diggory-1")), // t.Cleanup
		}},
		{name: "Should support pod selectors in the subject", do: []act{
			poke("slytherin/draco-malfoy-0", "ravenclaw/luna-lovegood-1", "tcp", 80, true),
			mutate(setPodLabel("ravenclaw/luna-lovegood-0", "restricted")),
			poke("ravenclaw/luna-lovegood-0", "slytherin/draco-malfoy-0", "tcp", 80, false),
			poke("ravenclaw/luna-lovegood-1", "slytherin/draco-malfoy-0", "tcp", 80, true),
			mutate(removePodLabel("ravenclaw/luna-lovegood-0")),
			poke("ravenclaw/luna-lovegood-0", "slytherin/draco-malfoy-0", "tcp", 80, true),
			mutate(setPodLabel("ravenclaw/luna-lovegood-1", "restricted")),
			poke("ravenclaw/luna-lovegood-1", "slytherin/draco-malfoy-0", "tcp", 80, false),
			mutate(removePodLabel("ravenclaw/luna-lovegood-0"), removePodLabel("ravenclaw/luna-lovegood-1")), // t.Cleanup
		}},
	}},
	{name: "CNPAdminTierPortRange", manifests: []string{"base/admin_tier/standard-port-range-rules-combined.yaml"}, steps: []cnpStep{
		{name: "Should support egress port range rules across different protocols", do: []act{
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-0", "tcp", 8080, true),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-0", "udp", 53, false),
			poke("gryffindor/harry-potter-0", "hufflepuff/cedric-diggory-0", "udp", 53, true),
			poke("gryffindor/harry-potter-0", "hufflepuff/cedric-diggory-0", "udp", 5353, true),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-0", "tcp", 80, false),
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "sctp", 9003, true),
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "sctp", 9005, true),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "tcp", 80, false),
		}},
		{name: "Should support ingress port range rules across different protocols", do: []act{
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-0", "tcp", 80, true),
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-0", "tcp", 8080, true),
			poke("ravenclaw/luna-lovegood-1", "gryffindor/harry-potter-0", "udp", 53, false),
			poke("hufflepuff/cedric-diggory-0", "gryffindor/harry-potter-0", "udp", 53, true),
			poke("hufflepuff/cedric-diggory-0", "gryffindor/harry-potter-0", "udp", 5353, true),
			poke("hufflepuff/cedric-diggory-1", "gryffindor/harry-potter-0", "tcp", 80, false),
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "sctp", 9003, true),
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "sctp", 9005, true),
			poke("slytherin/draco-malfoy-1", "gryffindor/harry-potter-0", "tcp", 80, false),
		}},
	}},
	{name: "CNPAdminTierPriorityField", manifests: []string{"base/admin_tier/standard-priority-field.yaml"}, steps: []cnpStep{
		{name: "Should Deny traffic from slytherin to gryffindor respecting admin CNP", do: []act{
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "tcp", 80, false),
			poke("slytherin/draco-malfoy-1", "gryffindor/harry-potter-0", "tcp", 8080, false),
		}},
		{name: "Should Deny traffic to slytherin from gryffindor respecting admin CNP", do: []act{
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "tcp", 8080, false),
		}},
		{name: "Should respect admin CNP priority field; thus passing both ingress and egress traffic over to baseline CNP", do: []act{
			mutate(setPriority("old-priority-60-new-priority-40-example", 40)),
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "tcp", 80, true),
			poke("slytherin/draco-malfoy-1", "gryffindor/harry-potter-0", "tcp", 8080, true),
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "tcp", 8080, true),
		}},
	}},
	{name: "CNPAdminTierSamePriority", manifests: []string{"base/admin_tier/standard-same-priority.yaml"}, steps: []cnpStep{
		{name: "Should deny traffic in both directions for each same-priority policy", do: []act{
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "tcp", 80, false),
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "tcp", 80, false),
			poke("hufflepuff/cedric-diggory-0", "gryffindor/harry-potter-0", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-0", "tcp", 80, false),
			poke("slytherin/draco-malfoy-1", "hufflepuff/cedric-diggory-0", "tcp", 8080, false),
			poke("hufflepuff/cedric-diggory-1", "slytherin/draco-malfoy-0", "tcp", 8080, false),
		}},
		{name: "Should not apply one same-priority policy's rules to another policy's subject", do: []act{
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "tcp", 8080, true),
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "tcp", 8080, true),
			poke("slytherin/draco-malfoy-1", "hufflepuff/cedric-diggory-0", "tcp", 80, true),
			poke("hufflepuff/cedric-diggory-0", "slytherin/draco-malfoy-0", "tcp", 80, true),
		}},
		{name: "Should not affect traffic matching no same-priority policy", do: []act{
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-0", "tcp", 80, true),
		}},
	}},
	{name: "CNPBaselineTierEgressNamedPort", manifests: []string{"base/baseline_tier/standard-egress-udp-rules.yaml"}, steps: []cnpStep{
		{name: "Should support an 'allow-egress' policy for named port", do: []act{
			mutate(namedPort("default", policy.Egress, 3, "dns")),
			poke("hufflepuff/cedric-diggory-0", "gryffindor/harry-potter-1", "udp", 53, true),
			poke("hufflepuff/cedric-diggory-1", "gryffindor/harry-potter-1", "udp", 5353, false),
		}},
	}},
	{name: "CNPBaselineTierEgressNodePeers", manifests: []string{"base/baseline_tier/experimental-egress-selector-rules.yaml"}, steps: []cnpStep{
		{name: "Should support an 'allow-egress' rule policy for egress-node-peer", do: []act{
			poke("gryffindor/harry-potter-0", "forbidden-forrest/centaur-1", "tcp", hostPorts[0], true),
			poke("gryffindor/harry-potter-1", "forbidden-forrest/centaur-1", "tcp", hostPorts[1], true),
		}},
		{name: "Should support a 'deny-egress' rule policy for egress-node-peer", do: []act{
			poke("gryffindor/harry-potter-1", "forbidden-forrest/centaur-1", "udp", hostPorts[4], false),
			poke("gryffindor/harry-potter-1", "forbidden-forrest/centaur-1", "sctp", hostPorts[6], false),
		}},
	}},
	{name: "CNPBaselineTierIngressNamedPort", manifests: []string{"base/baseline_tier/standard-ingress-tcp-rules.yaml"}, steps: []cnpStep{
		{name: "Should support an 'allow-ingress' policy for named port", do: []act{
			mutate(namedPort("default", policy.Ingress, 3, "web")),
			poke("hufflepuff/cedric-diggory-0", "gryffindor/harry-potter-1", "tcp", 80, true),
			poke("hufflepuff/cedric-diggory-1", "gryffindor/harry-potter-1", "tcp", 8080, false),
		}},
	}},
	{name: "CNPBaselineTierEgressInlineCIDRPeers", manifests: []string{"base/baseline_tier/standard-egress-inline-cidr-rules.yaml"}, steps: []cnpStep{
		{name: "Should support a 'deny-egress' rule policy for egress-cidr-peer", do: []act{
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-0", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-0", "udp", 53, false),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-0", "sctp", 9003, false),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-0", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-0", "udp", 53, false),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-0", "sctp", 9003, false),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "udp", 53, true),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "sctp", 9003, true),
			mutate(relabelNamespace("slytherin", map[string]string{"conformance-house": "denied-namespace-label"})),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "udp", 53, false),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "sctp", 9003, false),
			mutate(relabelNamespace("slytherin", map[string]string{"conformance-house": "slytherin"})),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "udp", 53, true),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "sctp", 9003, true),
		}},
		{name: "Should support an 'allow-egress' rule policy for egress-cidr-peer", do: []act{
			mutate(prependAcceptToPods("default", "ravenclaw/luna-lovegood-0", "hufflepuff/cedric-diggory-0")),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-0", "udp", 53, true),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-0", "sctp", 9003, true),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-0", "udp", 53, true),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-0", "sctp", 9003, true),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-1", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-1", "udp", 53, false),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-1", "sctp", 9003, false),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-1", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-1", "udp", 53, false),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-1", "sctp", 9003, false),
		}},
	}},
	{name: "CNPBaselineTierEgressSCTP", manifests: []string{"base/baseline_tier/standard-egress-sctp-rules.yaml"}, steps: []cnpStep{
		{name: "Should support an 'allow-egress' policy for SCTP protocol; ensure rule ordering is respected", do: []act{
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-0", "sctp", 9003, true),
			poke("ravenclaw/luna-lovegood-1", "gryffindor/harry-potter-0", "sctp", 9005, true),
		}},
		{name: "Should support an 'allow-egress' policy for SCTP protocol at the specified port", do: []act{
			poke("ravenclaw/luna-lovegood-0", "hufflepuff/cedric-diggory-1", "sctp", 9003, true),
			poke("ravenclaw/luna-lovegood-1", "hufflepuff/cedric-diggory-1", "sctp", 9005, false),
		}},
		{name: "Should support an 'deny-egress' policy for SCTP protocol; ensure rule ordering is respected", do: []act{
			mutate(swapRules("default", policy.Egress, 0, 1)),
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-1", "sctp", 9003, false),
			poke("ravenclaw/luna-lovegood-1", "gryffindor/harry-potter-1", "sctp", 9005, false),
		}},
		{name: "Should support a 'deny-egress' policy for SCTP protocol at the specified port", do: []act{
			poke("ravenclaw/luna-lovegood-0", "slytherin/draco-malfoy-0", "sctp", 9003, false),
			poke("ravenclaw/luna-lovegood-1", "slytherin/draco-malfoy-0", "sctp", 9005, true),
		}},
	}},
	{name: "CNPBaselineTierEgressTCP", manifests: []string{"base/baseline_tier/standard-egress-tcp-rules.yaml"}, steps: []cnpStep{
		{name: "Should support an 'allow-egress' policy for TCP protocol; ensure rule ordering is respected", do: []act{
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-0", "tcp", 8080, true),
		}},
		{name: "Should support an 'allow-egress' policy for TCP protocol at the specified port", do: []act{
			poke("gryffindor/harry-potter-0", "hufflepuff/cedric-diggory-1", "tcp", 8080, true),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-1", "tcp", 80, false),
		}},
		{name: "Should not affect ingress traffic when only egress rules are specified", do: []act{
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-0", "tcp", 80, true),
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-1", "tcp", 80, true),
		}},
		{name: "Should support an 'deny-egress' policy for TCP protocol; ensure rule ordering is respected", do: []act{
			mutate(swapRules("default", policy.Egress, 0, 1)),
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-1", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-1", "tcp", 8080, false),
		}},
		{name: "Should support a 'deny-egress' policy for TCP protocol at the specified port", do: []act{
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "tcp", 8080, true),
		}},
	}},
	{name: "CNPBaselineTierEgressUDP", manifests: []string{"base/baseline_tier/standard-egress-udp-rules.yaml"}, steps: []cnpStep{
		{name: "Should support an 'allow-egress' policy for UDP protocol; ensure rule ordering is respected", do: []act{
			poke("hufflepuff/cedric-diggory-0", "ravenclaw/luna-lovegood-0", "udp", 53, true),
			poke("hufflepuff/cedric-diggory-1", "ravenclaw/luna-lovegood-0", "udp", 5353, true),
		}},
		{name: "Should support an 'allow-egress' policy for UDP protocol at the specified port", do: []act{
			poke("hufflepuff/cedric-diggory-0", "gryffindor/harry-potter-1", "udp", 53, true),
			poke("hufflepuff/cedric-diggory-1", "gryffindor/harry-potter-1", "udp", 5353, false),
		}},
		{name: "Should support an 'deny-egress' policy for UDP protocol; ensure rule ordering is respected", do: []act{
			mutate(swapRules("default", policy.Egress, 0, 1)),
			poke("hufflepuff/cedric-diggory-0", "ravenclaw/luna-lovegood-1", "udp", 53, false),
			poke("hufflepuff/cedric-diggory-1", "ravenclaw/luna-lovegood-1", "udp", 5353, false),
		}},
		{name: "Should support a 'deny-egress' policy for UDP protocol at the specified port", do: []act{
			poke("hufflepuff/cedric-diggory-0", "slytherin/draco-malfoy-0", "udp", 5353, false),
			poke("hufflepuff/cedric-diggory-1", "slytherin/draco-malfoy-0", "udp", 53, true),
		}},
	}},
	{name: "CNPBaselineTierGress", manifests: []string{"base/baseline_tier/standard-gress-rules-combined.yaml"}, steps: []cnpStep{
		{name: "Should support an 'allow-gress' policy across different protocols", do: []act{
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-0", "udp", 53, true),
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-0", "sctp", 9003, true),
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-0", "tcp", 80, true),
			poke("ravenclaw/luna-lovegood-1", "gryffindor/harry-potter-0", "udp", 53, true),
			poke("ravenclaw/luna-lovegood-1", "gryffindor/harry-potter-0", "sctp", 9003, true),
		}},
		{name: "Should support an 'allow-gress' policy across different protocols at the specified ports", do: []act{
			poke("gryffindor/harry-potter-0", "hufflepuff/cedric-diggory-1", "tcp", 8080, true),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-1", "tcp", 80, false),
			poke("gryffindor/harry-potter-0", "hufflepuff/cedric-diggory-1", "udp", 5353, true),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-1", "udp", 53, false),
			poke("gryffindor/harry-potter-0", "hufflepuff/cedric-diggory-1", "sctp", 9003, true),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-1", "sctp", 9005, false),
			poke("hufflepuff/cedric-diggory-0", "gryffindor/harry-potter-1", "tcp", 80, true),
			poke("hufflepuff/cedric-diggory-1", "gryffindor/harry-potter-1", "tcp", 8080, false),
			poke("hufflepuff/cedric-diggory-0", "gryffindor/harry-potter-1", "udp", 5353, true),
			poke("hufflepuff/cedric-diggory-1", "gryffindor/harry-potter-1", "udp", 53, false),
			poke("hufflepuff/cedric-diggory-0", "gryffindor/harry-potter-1", "sctp", 9003, true),
			poke("hufflepuff/cedric-diggory-1", "gryffindor/harry-potter-1", "sctp", 9005, false),
		}},
		{name: "Should support an 'deny-gress' policy across different protocols", do: []act{
			mutate(swapRules("default", policy.Egress, 0, 1), swapRules("default", policy.Ingress, 0, 1)),
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-1", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-1", "udp", 53, false),
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-1", "sctp", 9003, false),
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-1", "tcp", 80, false),
			poke("ravenclaw/luna-lovegood-1", "gryffindor/harry-potter-1", "udp", 53, false),
			poke("ravenclaw/luna-lovegood-1", "gryffindor/harry-potter-1", "sctp", 9003, false),
		}},
		{name: "Should support a 'deny-gress' policy across different protocols at the specified ports", do: []act{
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "tcp", 8080, true),
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "udp", 53, false),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "udp", 5353, true),
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "sctp", 9003, false),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "sctp", 9005, true),
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "tcp", 80, false),
			poke("slytherin/draco-malfoy-1", "gryffindor/harry-potter-0", "tcp", 8080, true),
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "udp", 53, false),
			poke("slytherin/draco-malfoy-1", "gryffindor/harry-potter-0", "udp", 5353, true),
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "sctp", 9003, false),
			poke("slytherin/draco-malfoy-1", "gryffindor/harry-potter-0", "sctp", 9005, true),
		}},
	}},
	{name: "CNPBaselineTierIngressSCTP", manifests: []string{"base/baseline_tier/standard-ingress-sctp-rules.yaml"}, steps: []cnpStep{
		{name: "Should support an 'allow-ingress' policy for SCTP protocol; ensure rule ordering is respected", do: []act{
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-0", "sctp", 9003, true),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-0", "sctp", 9005, true),
		}},
		{name: "Should support an 'allow-ingress' policy for SCTP protocol at the specified port", do: []act{
			poke("hufflepuff/cedric-diggory-0", "ravenclaw/luna-lovegood-1", "sctp", 9003, true),
			poke("hufflepuff/cedric-diggory-1", "ravenclaw/luna-lovegood-1", "sctp", 9005, false),
		}},
		{name: "Should support an 'deny-ingress' policy for SCTP protocol; ensure rule ordering is respected", do: []act{
			mutate(swapRules("default", policy.Ingress, 0, 1)),
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-1", "sctp", 9003, false),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-1", "sctp", 9005, false),
		}},
		{name: "Should support a 'deny-ingress' policy for SCTP protocol at the specified port", do: []act{
			poke("slytherin/draco-malfoy-0", "ravenclaw/luna-lovegood-0", "sctp", 9003, false),
			poke("slytherin/draco-malfoy-1", "ravenclaw/luna-lovegood-0", "sctp", 9005, true),
		}},
	}},
	{name: "CNPBaselineTierIngressTCP", manifests: []string{"base/baseline_tier/standard-ingress-tcp-rules.yaml"}, steps: []cnpStep{
		{name: "Should support an 'allow-ingress' policy for TCP protocol; ensure rule ordering is respected", do: []act{
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-0", "tcp", 80, true),
			poke("ravenclaw/luna-lovegood-1", "gryffindor/harry-potter-0", "tcp", 8080, true),
		}},
		{name: "Should support an 'allow-ingress' policy for TCP protocol at the specified port", do: []act{
			poke("hufflepuff/cedric-diggory-0", "gryffindor/harry-potter-1", "tcp", 80, true),
			poke("hufflepuff/cedric-diggory-1", "gryffindor/harry-potter-1", "tcp", 8080, false),
		}},
		{name: "Should not affect egress traffic when only ingress rules are specified", do: []act{
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "tcp", 80, true),
		}},
		{name: "Should support an 'deny-ingress' policy for TCP protocol; ensure rule ordering is respected", do: []act{
			mutate(swapRules("default", policy.Ingress, 0, 1)),
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-1", "tcp", 80, false),
			poke("ravenclaw/luna-lovegood-1", "gryffindor/harry-potter-1", "tcp", 8080, false),
		}},
		{name: "Should support a 'deny-ingress' policy for TCP protocol at the specified port", do: []act{
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "tcp", 80, false),
			poke("slytherin/draco-malfoy-1", "gryffindor/harry-potter-0", "tcp", 8080, true),
		}},
	}},
	{name: "CNPBaselineTierIngressUDP", manifests: []string{"base/baseline_tier/standard-ingress-udp-rules.yaml"}, steps: []cnpStep{
		{name: "Should support an 'allow-ingress' policy for UDP protocol; ensure rule ordering is respected", do: []act{
			poke("ravenclaw/luna-lovegood-0", "hufflepuff/cedric-diggory-0", "udp", 53, true),
			poke("ravenclaw/luna-lovegood-1", "hufflepuff/cedric-diggory-0", "udp", 5353, true),
		}},
		{name: "Should support an 'allow-ingress' policy for UDP protocol at the specified port", do: []act{
			poke("gryffindor/harry-potter-0", "hufflepuff/cedric-diggory-1", "udp", 53, true),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-1", "udp", 5353, false),
		}},
		{name: "Should support an 'deny-ingress' policy for UDP protocol; ensure rule ordering is respected", do: []act{
			mutate(swapRules("default", policy.Ingress, 0, 1)),
			poke("ravenclaw/luna-lovegood-0", "hufflepuff/cedric-diggory-1", "udp", 53, false),
			poke("ravenclaw/luna-lovegood-1", "hufflepuff/cedric-diggory-1", "udp", 5353, false),
		}},
		{name: "Should support a 'deny-ingress' policy for UDP protocol at the specified port", do: []act{
			poke("slytherin/draco-malfoy-0", "hufflepuff/cedric-diggory-0", "udp", 5353, false),
			poke("slytherin/draco-malfoy-1", "hufflepuff/cedric-diggory-0", "udp", 53, true),
		}},
	}},
	{name: "CNPBaselineTierPodSelector", manifests: []string{"base/baseline_tier/standard-pod-selector-rules.yaml"}, steps: []cnpStep{
		{name: "Should support pod selectors in egress peers", do: []act{
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-0", "tcp", 8080, false),
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-1", "tcp", 80, false),
		}},
		{name: "Should support pod selectors in ingress peers", do: []act{
			poke("slytherin/draco-malfoy-1", "gryffindor/harry-potter-1", "tcp", 80, false),
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "tcp", 80, true),
			mutate(setPodLabel("hufflepuff/cedric-diggory-0", "blocked")),
			poke("hufflepuff/cedric-diggory-0", "gryffindor/harry-potter-0", "tcp", 80, false),
			poke("hufflepuff/cedric-diggory-1", "gryffindor/harry-potter-0", "tcp", 80, true),
			mutate(removePodLabel("hufflepuff/cedric-diggory-0")),
			poke("hufflepuff/cedric-diggory-0", "gryffindor/harry-potter-0", "tcp", 80, true),
			mutate(setPodLabel("hufflepuff/cedric-diggory-1", "blocked")),
			poke("hufflepuff/cedric-diggory-1", "gryffindor/harry-potter-0", "tcp", 80, false),
			mutate(removePodLabel("hufflepuff/cedric-diggory-0"), removePodLabel("hufflepuff/cedric-diggory-1")), // t.Cleanup
		}},
		{name: "Should support pod selectors in the subject", do: []act{
			poke("slytherin/draco-malfoy-0", "ravenclaw/luna-lovegood-1", "tcp", 80, true),
			mutate(setPodLabel("ravenclaw/luna-lovegood-0", "restricted")),
			poke("ravenclaw/luna-lovegood-0", "slytherin/draco-malfoy-0", "tcp", 80, false),
			poke("ravenclaw/luna-lovegood-1", "slytherin/draco-malfoy-0", "tcp", 80, true),
			mutate(removePodLabel("ravenclaw/luna-lovegood-0")),
			poke("ravenclaw/luna-lovegood-0", "slytherin/draco-malfoy-0", "tcp", 80, true),
			mutate(setPodLabel("ravenclaw/luna-lovegood-1", "restricted")),
			poke("ravenclaw/luna-lovegood-1", "slytherin/draco-malfoy-0", "tcp", 80, false),
			mutate(removePodLabel("ravenclaw/luna-lovegood-0"), removePodLabel("ravenclaw/luna-lovegood-1")), // t.Cleanup
		}},
	}},
	{name: "CNPBaselineTierPortRange", manifests: []string{"base/baseline_tier/standard-port-range-rules-combined.yaml"}, steps: []cnpStep{
		{name: "Should support egress port range rules across different protocols", do: []act{
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-0", "tcp", 80, true),
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-0", "tcp", 8080, true),
			poke("gryffindor/harry-potter-1", "ravenclaw/luna-lovegood-0", "udp", 53, false),
			poke("gryffindor/harry-potter-0", "hufflepuff/cedric-diggory-0", "udp", 53, true),
			poke("gryffindor/harry-potter-0", "hufflepuff/cedric-diggory-0", "udp", 5353, true),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-0", "tcp", 80, false),
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "sctp", 9003, true),
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "sctp", 9005, true),
			poke("gryffindor/harry-potter-1", "slytherin/draco-malfoy-0", "tcp", 80, false),
		}},
		{name: "Should support ingress port range rules across different protocols", do: []act{
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-0", "tcp", 80, true),
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-0", "tcp", 8080, true),
			poke("ravenclaw/luna-lovegood-1", "gryffindor/harry-potter-0", "udp", 53, false),
			poke("hufflepuff/cedric-diggory-0", "gryffindor/harry-potter-0", "udp", 53, true),
			poke("hufflepuff/cedric-diggory-0", "gryffindor/harry-potter-0", "udp", 5353, true),
			poke("hufflepuff/cedric-diggory-1", "gryffindor/harry-potter-0", "tcp", 80, false),
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "sctp", 9003, true),
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-0", "sctp", 9005, true),
			poke("slytherin/draco-malfoy-1", "gryffindor/harry-potter-0", "tcp", 80, false),
		}},
	}},
	{name: "CNPBaselineTierSamePriority", manifests: []string{"base/baseline_tier/standard-same-priority.yaml"}, steps: []cnpStep{
		{name: "Should deny traffic in both directions for each same-priority policy", do: []act{
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-1", "tcp", 80, false),
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-1", "tcp", 80, false),
			poke("hufflepuff/cedric-diggory-0", "gryffindor/harry-potter-1", "tcp", 80, false),
			poke("gryffindor/harry-potter-1", "hufflepuff/cedric-diggory-1", "tcp", 80, false),
			poke("slytherin/draco-malfoy-1", "hufflepuff/cedric-diggory-1", "tcp", 8080, false),
			poke("hufflepuff/cedric-diggory-1", "slytherin/draco-malfoy-1", "tcp", 8080, false),
		}},
		{name: "Should not apply one same-priority policy's rules to another policy's subject", do: []act{
			poke("slytherin/draco-malfoy-0", "gryffindor/harry-potter-1", "tcp", 8080, true),
			poke("gryffindor/harry-potter-0", "slytherin/draco-malfoy-1", "tcp", 8080, true),
			poke("slytherin/draco-malfoy-1", "hufflepuff/cedric-diggory-1", "tcp", 80, true),
			poke("hufflepuff/cedric-diggory-0", "slytherin/draco-malfoy-1", "tcp", 80, true),
		}},
		{name: "Should not affect traffic matching no same-priority policy", do: []act{
			poke("ravenclaw/luna-lovegood-0", "gryffindor/harry-potter-1", "tcp", 80, true),
			poke("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-1", "tcp", 80, true),
		}},
	}},
}

// TestClusterNetworkPolicyConformance replays the upstream conformance suite on the engine.
func TestClusterNetworkPolicyConformance(t *testing.T) {
	pokes := 0
	for _, ct := range conformanceTests {
		for _, st := range ct.steps {
			for _, a := range st.do {
				if a.mutate == nil {
					pokes++
				}
			}
		}
		t.Run(ct.name, ct.run)
	}
	if pokes != 397 { // grep -o 'kubernetes.PokeServer(' conformance/tests/*.go | wc -l
		t.Errorf("%d pokes transcribed, upstream has 397", pokes)
	}
}
