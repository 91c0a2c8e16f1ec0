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
// An empty directory is an empty State. On error the State is empty and the error joins
// every problem found, one per line, each naming file:line, the object and the field.
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
	pods       []podSource        // where each of state.Pods was defined
	seen       map[string]*object // by kind and namespace/name, to find duplicates
	errors     []error
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
	l.checkPodIPs()
	if len(l.errors) > 0 {
		return policy.State{}, errors.Join(l.errors...)
	}
	return l.state, nil
}

// mark is how much a loader had recorded at one point, to undo what came after.
type mark struct{ namespaces, nodes, pods, policies, errors int }

func (l *loader) mark() mark {
	return mark{len(l.state.Namespaces), len(l.state.Nodes), len(l.state.Pods), len(l.state.Policies), len(l.errors)}
}

// rollback forgets what was recorded since m, all of it from document o.
func (l *loader) rollback(m mark, o *object) {
	l.state.Namespaces = l.state.Namespaces[:m.namespaces]
	l.state.Nodes = l.state.Nodes[:m.nodes]
	l.state.Pods, l.pods = l.state.Pods[:m.pods], l.pods[:m.pods]
	l.state.Policies = l.state.Policies[:m.policies]
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

// report adds err, or each error it joins, prefixed with the object.
func (l *loader) report(o *object, err error) {
	if err == nil {
		return
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		l.errors = append(l.errors, fmt.Errorf("%s: %w", o, e))
	}
}

func (l *loader) reportFields(o *object, errs field.ErrorList) {
	for _, e := range errs {
		l.errors = append(l.errors, fmt.Errorf("%s: %w", o, e))
	}
}

// podSource is where a pod was defined and the field that held its addresses.
type podSource struct {
	o   *object
	ips string
}

// head is what Load reads of an object before decoding it, to name it and pick its type.
type head struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
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

// decode decodes an object of a known kind strictly, then checks and records it.
func (l *loader) decode(o *object, data []byte) {
	gvk := schema.FromAPIVersionAndKind(apiVersions[o.kind], o.kind)
	obj, _, err := decoder.Decode(data, &gvk, nil)
	if strict, ok := runtime.AsStrictDecodingError(err); ok {
		for _, e := range strict.Errors() {
			l.errorf(o, "%v", e) // unknown field "spec.foo"; the rest of the object decoded
		}
	} else if err != nil {
		l.errorf(o, "%v", err)
		return
	}

	metadata := field.NewPath("metadata")
	switch obj := obj.(type) {
	case *corev1.Namespace:
		l.reportFields(o, apivalidation.ValidateObjectMeta(&obj.ObjectMeta, false, apivalidation.ValidateNamespaceName, metadata))
		if l.unique(o) {
			l.state.Namespaces = append(l.state.Namespaces, policy.FromNamespace(obj))
		}
	case *corev1.Node:
		l.reportFields(o, apivalidation.ValidateObjectMeta(&obj.ObjectMeta, false, apivalidation.NameIsDNSSubdomain, metadata))
		l.reportFields(o, validateNodeAddresses(obj))
		if l.unique(o) {
			l.state.Nodes = append(l.state.Nodes, policy.FromNode(obj))
		}
	case *corev1.Pod:
		if obj.Namespace == "" {
			obj.Namespace = metav1.NamespaceDefault
		}
		l.reportFields(o, apivalidation.ValidateObjectMeta(&obj.ObjectMeta, true, apivalidation.NameIsDNSSubdomain, metadata))
		pod, err := policy.FromPod(obj)
		l.report(o, err)
		if l.unique(o) {
			ips := "status.podIPs"
			if len(obj.Status.PodIPs) == 0 {
				ips = "status.podIP"
			}
			l.state.Pods = append(l.state.Pods, pod)
			l.pods = append(l.pods, podSource{o, ips})
		}
	case *networkingv1.NetworkPolicy:
		if obj.Namespace == "" {
			obj.Namespace = metav1.NamespaceDefault
		}
		l.report(o, policy.Validate(obj))
		if l.unique(o) {
			l.state.Policies = append(l.state.Policies, obj)
		}
	case *cnpv1alpha2.ClusterNetworkPolicy:
		// Validated as the CRD would; fields the API documents as fail-closed (an empty
		// peer, domainNames) are not errors: the compiler enforces them fail-closed and
		// reports them (policy.Snapshot.ClusterProblems).
		l.report(o, policy.ValidateClusterPolicy(obj))
		if l.unique(o) {
			l.state.ClusterPolicies = append(l.state.ClusterPolicies, obj)
		}
	default:
		l.errorf(o, "decoded as %T: %s", obj, kindsWanted) // unreachable: apiVersions and the scheme agree
	}
}

// unique reports whether o is the first object of its kind and name, and reports a
// duplicate otherwise. Objects without a name are reported by validation instead.
func (l *loader) unique(o *object) bool {
	if o.name == "" {
		return true
	}
	key := o.ref()
	if first, ok := l.seen[key]; ok {
		l.errorf(o, "defined twice: also at %s", first.where())
		return false
	}
	l.seen[key] = o
	return true
}

// validateNodeAddresses reports node addresses policy.FromNode would skip.
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
	return errs
}

// checkPodIPs reports an address held by two pods that own their addresses: a cluster never
// gives one address to two running pods, and policy could not tell them apart. hostNetwork
// pods share their node's addresses; Succeeded and Failed pods have given theirs back.
func (l *loader) checkPodIPs() {
	owner := map[netip.Addr]int{}
	for i := range l.state.Pods {
		p := &l.state.Pods[i]
		if p.HostNetwork || p.Terminated() {
			continue
		}
		for _, ip := range p.IPs {
			j, ok := owner[ip]
			if !ok {
				owner[ip] = i
				continue
			}
			first := l.pods[j].o
			l.errorf(l.pods[i].o, "%s: Duplicate value: %q: also the address of %s (%s)",
				l.pods[i].ips, ip.String(), first.ref(), first.where())
		}
	}
}
