package policy

import "github.com/podwall/podwall/policy/flow"

// PortSpan returns the destination ports, first to last, over which Decide's verdict for f
// with only the port changed is the same. Interim: f's own port only.
func (s *Snapshot) PortSpan(f flow.Flow) (first, last uint16) { return f.Port, f.Port }
