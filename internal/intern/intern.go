// Package intern makes the API objects a process keeps for long (the API
// server's watch cache, its shared informers) share the memory of the
// values they repeat.
//
// A decoded object holds every string and map of its own: each pod of a
// Deployment has its own copy of its namespace, image, label keys and
// values, its owner's kind and UID, and its own map for its labels, node
// selector and each container's resource requests (a Go map of two
// entries takes ~700 bytes). At tens of thousands of pods these copies
// are a large part of the process's heap, kept twice (the watch cache's
// internal objects and the informers' versioned ones).
//
// Table.Object walks a freshly decoded object, once, before anything else
// sees it, bottom-up:
//   - each string becomes its canonical copy (the table's), except the
//     few that never repeat (an object's name, UID, resourceVersion) and
//     long ones;
//   - each small map of strings, or of resource quantities, becomes the
//     first map of the same type and contents the table saw;
//   - each pointer and slice becomes the first one of the same type whose
//     memory holds the same bytes: a pod's tolerations, its ServiceAccount
//     token volume's projections, its owner references, its containers'
//     ports and probes. Children are shared first, so equal contents are
//     equal bytes (a string's or child's address is its identity), and
//     equal bytes are always equal contents. Types that hold a timestamp
//     or an object's own metadata are not shared, only walked, nor is a
//     value that holds a resource.Quantity (outside a map: its String
//     caches the formatted value in place, so it is not read-only);
//   - likewise shares the bytes of managedFields' field sets (FieldsV1):
//     the entry a controller's create or update records is the same for
//     every pod of a ReplicaSet (~1 KB each, kept by the watch cache).
//
// The table is bounded: when it holds max values (or field sets' bytes
// past a budget) it starts over; objects keep what they share.
//
// Sharing pointers and slices as well as maps makes the walk ~20% dearer
// (~5.4 against ~4.6 us a pod in BenchmarkObjectPod, once per watch event
// on the watch cache's goroutine) and saves ~8% more of the live heap,
// which at tens of thousands of pods is what the garbage collector marks
// in every cycle (a third of the server's CPU at 18,000 pods).
//
// Sharing between objects is safe only where nothing mutates the objects
// in place, which is the contract of both places Skiff uses it: the watch
// cache hands out its objects read-only (watchers get lazy deep copies,
// updates deep-copy the cached object first) and informer caches must not
// be mutated by their readers (upstream runs its controllers with the
// cache mutation detector to hold them to it). Shared slices have no
// spare capacity, so an append to one copies. Objects on a request's
// read-modify-write path must not go through a Table.
package intern

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Limits on what is shared.
const (
	// maxString is the longest string interned: longer ones (large
	// annotations, last-applied configurations) rarely repeat.
	maxString = 256
	// maxMapLen bounds the maps shared (entries); maxKey the bytes a map,
	// slice or pointer is filed under.
	maxMapLen = 32
	maxKey    = 2048
	// maxFields is the largest field set shared, fieldsBudget the most
	// bytes of field sets the table files before it starts over.
	maxFields    = 16 << 10
	fieldsBudget = 4 << 20
	// maxStrings bounds the canonical strings the table keeps (a few
	// MB): when full it starts over, and forgets its shared values too,
	// which are filed by their strings' addresses.
	maxStrings = 64 << 10
	// DefaultMax is the default bound on shared maps, slices and pointers.
	DefaultMax = 16384
)

// Table is a set of canonical values and the plans for walking each type. It
// is safe for concurrent use.
type Table struct {
	max int

	mu     sync.Mutex
	values map[reflect.Type]map[string]any // maps, slices, pointers: by type, then contents
	n      int

	// strs are the canonical strings. The table keeps them itself:
	// package unique forgets a string once no handle to it is left, at
	// the next GC, after which the next copy of it would become a new
	// canonical string, and values filed by the old one's address would
	// never match again.
	strs map[string]string

	// fields are filed by a hash of their bytes; a hash shared by
	// different bytes shares nothing.
	seed        maphash.Seed
	fields      map[uint64][]byte
	fieldsBytes int

	plans sync.Map // reflect.Type -> *node (nil: nothing to do)
}

// New returns a table that keeps at most max shared values (DefaultMax if
// max <= 0).
func New(max int) *Table {
	if max <= 0 {
		max = DefaultMax
	}
	return &Table{max: max, values: map[reflect.Type]map[string]any{}, strs: map[string]string{}, seed: maphash.MakeSeed(), fields: map[uint64][]byte{}}
}

// Len returns how many shared maps, slices and pointers the table holds.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

// Object interns obj, a pointer to a struct; anything else is left alone.
// Only exported fields are walked; interfaces, byte slices (but
// FieldsV1's), arrays and maps of other values are not.
func (t *Table) Object(obj any) {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return
	}
	if n := t.plan(v.Type().Elem()); n != nil {
		t.walk(v.Elem(), n)
	}
}

type kind uint8

const (
	kString kind = iota
	kStruct
	kPointer
	kSlice
	kMap    // map[string-kind](string-kind | resource.Quantity): shared by contents
	kFields // metav1.FieldsV1: its bytes shared whole
	// kQuantity: a resource.Quantity outside a map: never shared (its
	// String caches the formatted value in place), nor what holds it.
	kQuantity
)

// node is the plan for walking one type: what to do with a value of it.
type node struct {
	kind   kind
	fields []field // kStruct
	elem   *node   // kPointer, kSlice; nil: nothing to walk inside
	// kPointer, kSlice: share by the bytes of the pointee / elements.
	share bool
	size  uintptr // kPointer, kSlice: the element's size
	quant bool    // kMap: values are resource.Quantity
}

type field struct {
	index int
	node  *node
}

var (
	objectMetaType = reflect.TypeFor[metav1.ObjectMeta]()
	quantityType   = reflect.TypeFor[resource.Quantity]()
	fieldsV1Type   = reflect.TypeFor[metav1.FieldsV1]()
	timeType       = reflect.TypeFor[time.Time]()
)

// unique per object: interning them costs a table entry and saves nothing.
var skipMetaFields = map[string]bool{"Name": true, "UID": true, "ResourceVersion": true, "SelfLink": true}

func (t *Table) plan(typ reflect.Type) *node {
	if n, ok := t.plans.Load(typ); ok {
		return n.(*node)
	}
	b := builder{nodes: map[reflect.Type]*node{}, volatile: map[reflect.Type]bool{}}
	n := b.build(typ)
	t.plans.Store(typ, n)
	return n
}

type builder struct {
	nodes    map[reflect.Type]*node // built or in progress (cycles)
	volatile map[reflect.Type]bool
}

// isVolatile: values of typ hold a timestamp or an object's own metadata,
// so they practically never repeat and are not worth a table entry.
func (b *builder) isVolatile(typ reflect.Type) bool {
	if v, ok := b.volatile[typ]; ok {
		return v
	}
	b.volatile[typ] = false // cycles: assume not
	v := false
	switch typ.Kind() {
	case reflect.Struct:
		if typ == timeType || typ == objectMetaType {
			v = true
			break
		}
		for i := range typ.NumField() {
			if b.isVolatile(typ.Field(i).Type) {
				v = true
				break
			}
		}
	case reflect.Pointer, reflect.Slice, reflect.Array:
		// Not maps: a map's values cannot be changed in place, and maps
		// are shared by their contents.
		v = b.isVolatile(typ.Elem())
	}
	b.volatile[typ] = v
	return v
}

// scalar: a kind whose bytes are its whole value.
func scalar(k reflect.Kind) bool {
	switch k {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

// build returns typ's plan, or nil if values of typ hold nothing to intern
// or share.
func (b *builder) build(typ reflect.Type) *node {
	if n, ok := b.nodes[typ]; ok {
		return n
	}
	switch typ.Kind() {
	case reflect.String:
		return &node{kind: kString}
	case reflect.Pointer, reflect.Slice:
		if typ.Kind() == reflect.Slice && typ.Elem().Kind() == reflect.Uint8 {
			return nil
		}
		n := &node{kind: kPointer, size: typ.Elem().Size()}
		if typ.Kind() == reflect.Slice {
			n.kind = kSlice
		}
		b.nodes[typ] = n
		n.elem = b.build(typ.Elem())
		n.share = n.size > 0 && !b.isVolatile(typ.Elem()) &&
			(n.elem != nil || scalar(typ.Elem().Kind()) || typ.Elem().Kind() == reflect.Struct)
		if n.elem == nil && !n.share {
			delete(b.nodes, typ)
			return nil
		}
		return n
	case reflect.Map:
		if typ.Key().Kind() != reflect.String {
			return nil
		}
		switch {
		case typ.Elem().Kind() == reflect.String:
			return &node{kind: kMap}
		case typ.Elem() == quantityType:
			return &node{kind: kMap, quant: true}
		}
		return nil
	case reflect.Struct:
		switch typ {
		case fieldsV1Type:
			return &node{kind: kFields}
		case quantityType:
			return &node{kind: kQuantity}
		}
		n := &node{kind: kStruct}
		b.nodes[typ] = n
		for i := range typ.NumField() {
			f := typ.Field(i)
			if !f.IsExported() || typ == objectMetaType && skipMetaFields[f.Name] {
				continue
			}
			if fn := b.build(f.Type); fn != nil {
				n.fields = append(n.fields, field{index: i, node: fn})
			}
		}
		if len(n.fields) == 0 {
			delete(b.nodes, typ)
			return nil
		}
		return n
	}
	return nil
}

// walk interns and shares what v holds, bottom-up. It reports whether v
// is novel: it holds something the table did not have (a value filed
// just now, or one that is never shared). A novel child makes its parent
// novel without a lookup, since no value filed before can hold the child:
// a structure is filed once its parts are (after an object or two), and
// values that hold something unique (a pod's own volume name) are not
// filed at all above that part.
func (t *Table) walk(v reflect.Value, n *node) (novel bool) {
	switch n.kind {
	case kString:
		s := v.String()
		if len(s) > maxString {
			return true
		}
		if s != "" {
			if c := t.canonical(s); unsafe.StringData(c) != unsafe.StringData(s) {
				v.SetString(c)
			}
		}
	case kStruct:
		for _, f := range n.fields {
			if t.walk(v.Field(f.index), f.node) {
				novel = true
			}
		}
	case kPointer:
		if v.IsNil() {
			return false
		}
		if n.elem != nil && t.walk(v.Elem(), n.elem) || !n.share {
			return true
		}
		return t.share(v, unsafe.Slice((*byte)(v.UnsafePointer()), n.size))
	case kSlice:
		l := v.Len()
		if l == 0 {
			return false
		}
		if n.elem != nil {
			for i := range l {
				if t.walk(v.Index(i), n.elem) {
					novel = true
				}
			}
		}
		if novel || !n.share || uintptr(l)*n.size > maxKey {
			return true
		}
		if v.Cap() != l {
			v.Set(v.Slice3(0, l, l))
		}
		return t.share(v, unsafe.Slice((*byte)(v.UnsafePointer()), uintptr(l)*n.size))
	case kMap:
		if v.Len() == 0 {
			return false
		}
		if v.Len() > maxMapLen {
			return true
		}
		return t.shareMap(v, n.quant)
	case kFields:
		// Field sets are shared, but a structure holding one is not
		// (managedFields entries hold their timestamps anyway).
		raw := v.Field(0) // FieldsV1.Raw
		if b := raw.Bytes(); len(b) > 0 && len(b) <= maxFields {
			if shared := t.shareFields(b); shared != nil {
				raw.SetBytes(shared)
			}
		}
		return true
	case kQuantity:
		return true
	}
	return novel
}

// share sets v to the table's value of v's type filed under key, or files
// v there if there is none (and reports that: v is novel).
func (t *Table) share(v reflect.Value, key []byte) (filed bool) {
	if len(key) > maxKey {
		return true
	}
	t.mu.Lock()
	byType := t.values[v.Type()]
	shared, ok := byType[string(key)]
	if !ok {
		if t.n >= t.max {
			t.forgetValues()
			byType = nil
		}
		if byType == nil {
			byType = map[string]any{}
			t.values[v.Type()] = byType
		}
		byType[string(key)] = v.Interface()
		t.n++
	}
	t.mu.Unlock()
	if ok {
		v.Set(reflect.ValueOf(shared))
	}
	return !ok
}

// forgetValues starts the shared maps, slices and pointers over; t.mu is
// held.
func (t *Table) forgetValues() {
	clear(t.values)
	t.n = 0
}

// canonical returns the table's copy of s, filing a copy of s if it has
// none.
func (t *Table) canonical(s string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c, ok := t.strs[s]; ok {
		return c
	}
	if len(t.strs) >= maxStrings {
		clear(t.strs)
		t.forgetValues()
	}
	c := strings.Clone(s)
	t.strs[c] = c
	return c
}

// shareFields returns the table's field set with b's bytes, filing b as
// that field set if there is none (then it returns nil).
func (t *Table) shareFields(b []byte) []byte {
	h := maphash.Bytes(t.seed, b)
	t.mu.Lock()
	defer t.mu.Unlock()
	if shared, ok := t.fields[h]; ok {
		if bytes.Equal(shared, b) {
			return shared
		}
		return nil
	}
	if t.fieldsBytes+len(b) > fieldsBudget || len(t.fields) >= t.max {
		clear(t.fields)
		t.fieldsBytes = 0
	}
	t.fields[h] = b
	t.fieldsBytes += len(b)
	return nil
}

// shareMap shares a map by its contents (a map's memory is no key); it
// reports whether v is novel.
func (t *Table) shareMap(v reflect.Value, quant bool) (filed bool) {
	type entry struct {
		k string
		v reflect.Value
	}
	var backing [maxMapLen]entry
	entries := backing[:0]
	for it := v.MapRange(); it.Next(); {
		entries = append(entries, entry{it.Key().String(), it.Value()})
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.k, b.k) })
	bp := keyBuffers.Get().(*[]byte)
	defer keyBuffers.Put(bp)
	b := (*bp)[:0]
	defer func() { *bp = b }()
	// Each string length-prefixed: keys and values may hold any byte.
	str := func(b []byte, s string) []byte { return append(binary.AppendUvarint(b, uint64(len(s))), s...) }
	for _, e := range entries {
		b = str(b, e.k)
		if quant {
			q := e.v.Interface().(resource.Quantity)
			b = str(str(b, q.String()), string(q.Format))
		} else {
			b = str(b, e.v.String())
		}
		if len(b) > maxKey {
			return true
		}
	}
	return t.share(v, b)
}

// keyBuffers hold the keys maps are filed under while they are built.
var keyBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}
