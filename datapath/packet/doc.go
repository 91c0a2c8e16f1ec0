// Package packet decodes the headers of a packet handed to userspace by
// NFQUEUE into a Parsed: a fixed value struct of addresses, protocol,
// ports, TCP flags, ICMP type and code, and fragment state.
//
// It owns the first step of the datapath's hot path — bytes to header
// fields — and nothing else: it knows no policy and no verdicts. The
// datapath turns a Parsed into a policy flow and a verdict; a Decode error
// (ErrTruncated, ErrMalformed) becomes a verdict with a reason under the
// agent's single failure policy, never a crash and never wider access.
//
// Decoding is built on gopacket's DecodingLayerParser with layers
// preallocated in a Decoder, one per queue reader, and allocates nothing:
// TestDecodeNoAllocs asserts it for every protocol, and FuzzDecode both
// compares Decode with gopacket's full (allocating) decode as the slow
// reference and checks that no input makes gopacket build an error, the
// one place where it would allocate. See Decoder for what is taken from
// gopacket, what is decoded here and why, and how captures cut short by the
// NFQUEUE copy range are handled.
//
// With conntrack in the ruleset, the kernel reassembles IP fragments
// (nf_defrag) before the podwall chains see them, so fragments normally never
// reach the queue; the fragment handling here is defence in depth for
// rulesets without it.
package packet
