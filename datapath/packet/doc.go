// Package packet decodes the headers of a packet handed to userspace by
// NFQUEUE into a Parsed: a fixed value struct of addresses, protocol,
// ports, TCP flags, ICMP type and code, and fragment state.
//
// It owns the first step of the datapath's hot path — bytes to header
// fields — and nothing else: it knows no policy and no verdicts. The
// datapath turns a Parsed into a policy flow and a verdict; a Decode error
// (ErrTruncated, ErrMalformed) becomes a drop with a reason, in both
// failure modes, never a crash and never wider access.
//
// It reads headers as the kernel forwards the packet, not as a validator
// would: Decode fails only where the fields the verdict needs cannot be read
// the way the kernel (nft's meta l4proto and th, conntrack) reads them, or
// where no receiving stack would take the transport header. See Decoder for
// the rules, protocol by protocol.
//
// Decoding is built on gopacket's DecodingLayerParser with layers
// preallocated in a Decoder, one per queue reader, and allocates nothing:
// TestDecodeNoAllocs asserts it for every case of the table. The IPv4, IPv6
// (with its extension header chain) and TCP layers are this package's own,
// reading fixed offsets; UDP, SCTP, ICMPv4 and ICMPv6 are gopacket's behind
// length guards. FuzzDecode compares Decode with a slow reference written
// from the kernel's rules and with gopacket's full (allocating) decode, and
// checks that no input makes gopacket build an error, the one place where
// it would allocate.
//
// With conntrack in the ruleset, the kernel reassembles IP fragments
// (nf_defrag) before the podwall chains see them, so fragments normally never
// reach the queue; the fragment handling here is defence in depth for
// rulesets without it.
package packet
