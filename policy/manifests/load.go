package manifests

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/podwall/podwall/policy"
)

// Load reads the manifests at path: one file, or every *.yaml, *.yml and *.json file under a
// directory and its subdirectories, in lexical order of their paths. Names starting with "."
// are skipped (editor swap files, .git, the ..data directories of a mounted ConfigMap, whose
// visible files are symlinks and are read); symlinked directories are not followed. A file
// holds YAML documents separated by "---" lines, or JSON values; each is a v1 Namespace, Pod,
// Node or List, a networking.k8s.io/v1 NetworkPolicy, a policy.networking.k8s.io/v1alpha2
// ClusterNetworkPolicy, or a NamespaceList, PodList, NodeList, NetworkPolicyList or
// ClusterNetworkPolicyList. The objects appear in the State in the order read.
//
// An object of a kind Load reads, with a name, that is invalid (a field podwall refuses, an
// unknown field, a value of the wrong type) is rejected alone: it is named in
// State.Problems, each with file:line and fields, and handled as policy.Problem says (a
// NetworkPolicy is enforced fail-closed; one that does not even decode isolates its whole
// namespace both ways; a ClusterNetworkPolicy that fails policy.ValidateClusterPolicy is
// enforced fail-closed). Every other object applies.
//
// What cannot be pinned on one named object fails the load: a file that cannot be read, a
// document that is not YAML or JSON or not an object, a missing or unknown kind or
// apiVersion, an object without a name, the same object twice — and a ClusterNetworkPolicy
// that does not decode strictly (an unknown or misspelt field, a value of the wrong type):
// what it protects cannot be known, and read leniently it could allow what it denies, so
// the caller keeps its last good state. An empty directory is an
// empty State. On error the State is empty and the error joins every problem found, the
// objects' included, one per line, each naming file:line, the object and the field.
func Load(path string) (policy.State, error) {
	return read(path).parse()
}

// The kinds Load reads, with their apiVersion. A kind ending in List holds items of the kind
// it names ("List" holds any).
var apiVersions = map[string]string{
	"Namespace":         "v1",
	"Pod":               "v1",
	"Node":              "v1",
	"NetworkPolicy":     "networking.k8s.io/v1",
	"List":              "v1",
	"NamespaceList":     "v1",
	"PodList":           "v1",
	"NodeList":          "v1",
	"NetworkPolicyList": "networking.k8s.io/v1",

	"ClusterNetworkPolicy":     "policy.networking.k8s.io/v1alpha2",
	"ClusterNetworkPolicyList": "policy.networking.k8s.io/v1alpha2",
}

const kindsWanted = "want a v1 Namespace, Pod, Node or List, a networking.k8s.io/v1 NetworkPolicy or a policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy"

// decoder decodes the kinds Load reads into their API types, strictly: unknown and duplicate
// fields are errors. It neither defaults nor converts.
var decoder = func() runtime.Decoder {
	s := runtime.NewScheme()
	utilruntime.Must(corev1.AddToScheme(s))
	utilruntime.Must(networkingv1.AddToScheme(s))
	utilruntime.Must(cnpv1alpha2.Install(s))
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}()

// file is one manifest file as read.
type file struct {
	name string
	data []byte
	err  error // reading failed
}

// source is what Load reads from its path, before parsing.
type source struct {
	files []file
	dirs  []string // directories to watch for changes
	sum   [sha256.Size]byte

	wholeLists bool // for tests: read YAML Lists whole, the reference splitList must match
}

func read(path string) *source {
	src := &source{}
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		src.files = append(src.files, file{name: path, err: err})
	case !fi.IsDir():
		src.dirs = append(src.dirs, filepath.Dir(path))
		src.add(path)
	default:
		err := filepath.WalkDir(path, func(name string, d fs.DirEntry, err error) error {
			switch {
			case err != nil:
				src.files = append(src.files, file{name: name, err: err})
				return nil
			case name != path && strings.HasPrefix(d.Name(), "."):
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			case d.IsDir():
				src.dirs = append(src.dirs, name)
				return nil
			}
			switch strings.ToLower(filepath.Ext(name)) {
			case ".yaml", ".yml", ".json":
			default:
				return nil
			}
			if !d.Type().IsRegular() {
				// A symlink to a regular file is read; a FIFO would block, a directory is not followed.
				fi, err := os.Stat(name)
				if err == nil && !fi.Mode().IsRegular() {
					return nil
				}
			}
			src.add(name)
			return nil
		})
		if err != nil {
			src.files = append(src.files, file{name: path, err: err})
		}
	}
	h := sha256.New()
	for _, f := range src.files {
		fmt.Fprintf(h, "%q %d %v\n", f.name, len(f.data), f.err)
		h.Write(f.data)
	}
	h.Sum(src.sum[:0])
	return src
}

func (s *source) add(name string) {
	data, err := os.ReadFile(name)
	s.files = append(s.files, file{name: name, data: data, err: err})
}

// loader collects the state and every problem while parsing a source.
type loader struct {
	wholeLists bool // source.wholeLists
	state      policy.State
	seen       map[string]*object // by kind and namespace/name, to find duplicates
	errors     []error            // what fails the load
}

func (s *source) parse() (policy.State, error) {
	l := &loader{wholeLists: s.wholeLists, seen: map[string]*object{}}
	for _, f := range s.files {
		if f.err != nil {
			l.errors = append(l.errors, f.err) // os errors name the file
			continue
		}
		var docs []doc
		if strings.EqualFold(filepath.Ext(f.name), ".json") {
			docs = l.splitJSON(f.name, f.data)
		} else {
			docs = l.splitYAML(f.name, f.data)
		}
		inserted := 0 // problems the file's Lists added among those of splitYAML
		for _, d := range docs {
			o := &object{file: d.file, line: d.line, doc: d.index, item: -1}
			if d.list == nil {
				l.object(o, d.json, "")
				continue
			}
			if l.yamlList(o, d.list) {
				continue
			}
			// An entry does not convert alone: read the document whole, as splitYAML would
			// have, with its problem where splitYAML would have put it.
			j, err := yamlToJSON(d.file, d.index, d.line, d.list.startLine, d.list.text)
			if err != nil {
				l.errors = slices.Insert(l.errors, d.list.errAt+inserted, err)
				inserted++
				continue
			}
			l.object(o, j, "")
		}
	}
	if len(l.errors) > 0 {
		for _, p := range l.state.Problems {
			l.errors = append(l.errors, errors.New(p.String()))
		}
		return policy.State{}, errors.Join(l.errors...)
	}
	return l.state, nil
}

// mark is how much a loader had recorded at one point, to undo what came after.
type mark struct{ namespaces, nodes, pods, policies, problems, errors int }

func (l *loader) mark() mark {
	return mark{len(l.state.Namespaces), len(l.state.Nodes), len(l.state.Pods), len(l.state.Policies),
		len(l.state.Problems), len(l.errors)}
}

// rollback forgets what was recorded since m, all of it from document o.
func (l *loader) rollback(m mark, o *object) {
	l.state.Namespaces = l.state.Namespaces[:m.namespaces]
	l.state.Nodes = l.state.Nodes[:m.nodes]
	l.state.Pods = l.state.Pods[:m.pods]
	l.state.Policies = l.state.Policies[:m.policies]
	l.state.Problems = l.state.Problems[:m.problems]
	l.errors = l.errors[:m.errors]
	for key, first := range l.seen {
		if first.file == o.file && first.doc == o.doc {
			delete(l.seen, key)
		}
	}
}

// object names one object of the manifests in errors.
type object struct {
	file      string
	line      int // first line of its document
	doc       int // 1-based index of its document in the file
	item      int // index in the List of the document, or -1
	kind      string
	namespace string
	name      string
	// staged: the object is a staged policy (policy.StagedAnnotation), which may share its
	// name with an enforced one: it proposes to replace it (SPEC §2c).
	staged bool
}

// inList returns the object that names the i-th item of List o.
func (o *object) inList(i int) *object {
	return &object{file: o.file, line: o.line, doc: o.doc, item: i}
}

func (o *object) where() string { return fmt.Sprintf("%s:%d", o.file, o.line) }

// ref returns "Kind namespace/name" or "Kind name" ("object name" when it has no kind).
func (o *object) ref() string {
	kind := o.kind
	if kind == "" {
		kind = "object"
	}
	if o.namespace == "" {
		return kind + " " + o.name
	}
	return kind + " " + o.namespace + "/" + o.name
}

// String returns "file:line: Kind namespace/name", or when the object has no name,
// "file:line: document N[ items[i]][ (Kind)]".
func (o *object) String() string {
	if o.name != "" {
		return o.where() + ": " + o.ref()
	}
	s := fmt.Sprintf("%s: document %d", o.where(), o.doc)
	if o.item >= 0 {
		s += fmt.Sprintf(" items[%d]", o.item)
	}
	if o.kind != "" {
		s += " (" + o.kind + ")"
	}
	return s
}

func (l *loader) errorf(o *object, format string, args ...any) {
	l.errors = append(l.errors, fmt.Errorf("%s: %s", o, fmt.Sprintf(format, args...)))
}

// head is what Load reads of an object before decoding it, to name it and pick its type.
type head struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Namespace   string            `json:"namespace"`
		Name        string            `json:"name"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
}

// object decodes one object, an item of a list of kind list when list is not empty.
func (l *loader) object(o *object, data []byte, list string) {
	if !l.identify(o, data, list) {
		return
	}
	if !strings.HasSuffix(o.kind, "List") {
		l.decode(o, data)
		return
	}
	items, ok := l.listEnvelope(o, data)
	if !ok {
		return
	}
	for i, item := range items {
		l.object(o.inList(i), item, o.kind)
	}
}

// identify names o from its head and checks its kind and apiVersion; it reports whether
// the object is one to decode: a List (when list is empty) or an object of a kind Load reads.
func (l *loader) identify(o *object, data []byte, list string) bool {
	if b := bytes.TrimSpace(data); len(b) == 0 || b[0] != '{' {
		l.errorf(o, "not a Kubernetes object: %s", kindsWanted)
		return false
	}
	var h head
	_ = json.Unmarshal(data, &h) // best effort, for naming; decoding reports type errors
	elem := strings.TrimSuffix(list, "List")
	if h.Kind == "" && h.APIVersion == "" && elem != "" {
		h.Kind, h.APIVersion = elem, apiVersions[elem] // typed lists may omit these in items
	}
	o.kind, o.namespace, o.name = h.Kind, h.Metadata.Namespace, h.Metadata.Name
	o.staged = h.Metadata.Annotations[policy.StagedAnnotation] == "true"
	if o.namespace == "" && (o.kind == "Pod" || o.kind == "NetworkPolicy") {
		o.namespace = metav1.NamespaceDefault
	}

	want, known := apiVersions[h.Kind]
	switch {
	case h.Kind == "":
		l.errorf(o, "kind: Required value: %s", kindsWanted)
	case !known:
		l.errorf(o, "kind: Unsupported value: %q (apiVersion %q): %s", h.Kind, h.APIVersion, kindsWanted)
	case h.APIVersion == "":
		l.errorf(o, "apiVersion: Required value: kind %s is read as apiVersion %q", h.Kind, want)
	case h.APIVersion != want:
		l.errorf(o, "apiVersion: Unsupported value: %q: kind %s is read as apiVersion %q", h.APIVersion, h.Kind, want)
	case strings.HasSuffix(h.Kind, "List") && list != "":
		l.errorf(o, "kind: Invalid value: %q: a list inside a list is not supported", h.Kind)
	case elem != "" && h.Kind != elem:
		l.errorf(o, "kind: Invalid value: %q: a %s holds only %s objects", h.Kind, list, elem)
	default:
		return true
	}
	return false
}

// decode decodes an object of a known kind strictly, then checks and records it: an object
// with problems is rejected alone (reject).
func (l *loader) decode(o *object, data []byte) {
	var errs []error // the object's problems
	gvk := schema.FromAPIVersionAndKind(apiVersions[o.kind], o.kind)
	obj, _, err := decoder.Decode(data, &gvk, nil)
	if strict, ok := runtime.AsStrictDecodingError(err); ok {
		errs = append(errs, strict.Errors()...) // unknown field "spec.foo"; the rest of the object decoded
	} else if err != nil {
		errs = append(errs, err)
		obj = nil
	}
	if !l.unique(o) {
		return
	}

	metadata := field.NewPath("metadata")
	fields := func(fe field.ErrorList) {
		for _, e := range fe {
			errs = append(errs, e)
		}
	}
	switch obj := obj.(type) {
	case *corev1.Namespace:
		fields(apivalidation.ValidateObjectMeta(&obj.ObjectMeta, false, apivalidation.ValidateNamespaceName, metadata))
		if len(errs) == 0 { // a namespace with problems is left out: its pods match no namespaceSelector
			l.state.Namespaces = append(l.state.Namespaces, policy.FromNamespace(obj))
		}
	case *corev1.Node:
		fields(apivalidation.ValidateObjectMeta(&obj.ObjectMeta, false, apivalidation.NameIsDNSSubdomain, metadata))
		fields(validateNodeAddresses(obj))
		l.state.Nodes = append(l.state.Nodes, policy.FromNode(obj)) // with the addresses that parse
	case *corev1.Pod:
		if obj.Namespace == "" {
			obj.Namespace = metav1.NamespaceDefault
		}
		fields(apivalidation.ValidateObjectMeta(&obj.ObjectMeta, true, apivalidation.NameIsDNSSubdomain, metadata))
		pod, problem := policy.PodOf(obj)
		if len(errs) > 0 {
			pod.IPs = nil // what else the object says cannot be trusted
		}
		if problem != nil {
			errs = append(errs, problem.Err)
		}
		l.state.Pods = append(l.state.Pods, pod)
	case *networkingv1.NetworkPolicy:
		if obj.Namespace == "" {
			obj.Namespace = metav1.NamespaceDefault
		}
		if err := policy.Validate(obj); err != nil {
			errs = append(errs, err)
		}
		l.state.Policies = append(l.state.Policies, obj) // the compiler enforces it fail-closed
	case nil: // did not decode
		switch o.kind {
		case "ClusterNetworkPolicy":
			l.refuse(o, errs)
			return
		case policy.KindPod:
			l.state.Pods = append(l.state.Pods, policy.Pod{Namespace: o.namespace, Name: o.name})
		case policy.KindNetworkPolicy:
			// Nothing of it can be read: it isolates its whole namespace, both ways (a
			// staged one in the staged verdict only).
			meta := metav1.ObjectMeta{Namespace: o.namespace, Name: o.name}
			if o.staged {
				meta.Annotations = map[string]string{policy.StagedAnnotation: "true"}
			}
			l.state.Policies = append(l.state.Policies, &networkingv1.NetworkPolicy{
				ObjectMeta: meta,
				Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{
					networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}},
			})
		}
	case *cnpv1alpha2.ClusterNetworkPolicy:
		// One that does not decode strictly (an unknown or misspelt field) refuses the files:
		// the last good state stays. Its subject cannot be known — a misspelt subject field
		// leaves one that selects other pods, or none — and read without the field it could
		// allow what it denies, while a ClusterNetworkPolicy's Deny rules protect pods no
		// namespace owner controls. (One that does not decode at all, a value of the wrong
		// type, is refused in the nil case above.)
		if len(errs) > 0 {
			l.refuse(o, errs)
			return
		}
		// One that decodes but fails validation (what the CRD refuses: tier, priority,
		// subject, selectors, CIDRs, ports, counts) is rejected alone, as the API path does:
		// recorded as it is, the compiler enforces it fail-closed (it denies all of its
		// subject's traffic in the directions it has rules for) and the Problem names it.
		// Fields the API documents as fail-closed (an empty peer, domainNames) are not
		// errors: the compiler enforces them fail-closed and reports them
		// (policy.Snapshot.ClusterProblems).
		if err := policy.ValidateClusterPolicy(obj); err != nil {
			errs = append(errs, err)
		}
		if o.name != "" { // without a name, reject refuses the files
			l.state.ClusterPolicies = append(l.state.ClusterPolicies, obj)
		}
	default:
		errs = append(errs, fmt.Errorf("decoded as %T: %s", obj, kindsWanted)) // unreachable: apiVersions and the scheme agree
	}
	l.reject(o, errs)
}

// reject records the problems of one object: a Problem that rejects it alone, or, for an
// object without a name, which cannot be rejected alone, errors that fail the load. Each
// error joined in one of errs is a problem of its own.
func (l *loader) reject(o *object, errs []error) {
	var all []error
	for _, err := range errs {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			all = append(all, j.Unwrap()...)
		} else {
			all = append(all, err)
		}
	}
	if len(all) == 0 {
		return
	}
	if o.name == "" {
		l.refuse(o, all)
		return
	}
	l.state.Problems = append(l.state.Problems, policy.Problem{Kind: o.kind, Namespace: o.namespace, Name: o.name,
		Where: o.where(), Err: errors.Join(all...)})
}

// refuse records errors of o that fail the whole load, each a problem of its own.
func (l *loader) refuse(o *object, errs []error) {
	for _, err := range errs {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				l.errors = append(l.errors, fmt.Errorf("%s: %w", o, e))
			}
		} else {
			l.errors = append(l.errors, fmt.Errorf("%s: %w", o, err))
		}
	}
}

// unique reports whether o is the first object of its kind and name, and reports a
// duplicate otherwise. Objects without a name are reported by validation instead.
func (l *loader) unique(o *object) bool {
	if o.name == "" {
		return true
	}
	key := o.ref()
	if o.staged {
		key += " (staged)"
	}
	if first, ok := l.seen[key]; ok {
		l.errorf(o, "defined twice: also at %s", first.where())
		return false
	}
	l.seen[key] = o
	return true
}

// validateNodeAddresses reports node addresses and pod ranges policy.FromNode would skip.
func validateNodeAddresses(n *corev1.Node) field.ErrorList {
	var errs field.ErrorList
	for i, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err != nil || ip.Zone() != "" || ip.Is4In6() {
			errs = append(errs, field.Invalid(field.NewPath("status", "addresses").Index(i).Child("address"), a.Address,
				"must be a valid IP address, without a zone, not IPv4-mapped"))
		}
	}
	for i, c := range n.Spec.PodCIDRs {
		if p, err := netip.ParsePrefix(c); err != nil || p.Addr().Is4In6() {
			errs = append(errs, field.Invalid(field.NewPath("spec", "podCIDRs").Index(i), c,
				"must be a valid CIDR (address/bits), not IPv4-mapped"))
		}
	}
	if c := n.Spec.PodCIDR; c != "" && len(n.Spec.PodCIDRs) == 0 {
		if p, err := netip.ParsePrefix(c); err != nil || p.Addr().Is4In6() {
			errs = append(errs, field.Invalid(field.NewPath("spec", "podCIDR"), c, "must be a valid CIDR (address/bits), not IPv4-mapped"))
		}
	}
	return errs
}
