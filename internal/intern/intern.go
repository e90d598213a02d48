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
// sees it, and
//   - replaces each string by its canonical copy (package unique), except
//     the few that never repeat (an object's name, UID, resourceVersion)
//     and long ones;
//   - replaces each small map of strings, or of resource quantities, by
//     the first map with the same type and contents that it saw (bounded:
//     when the table is full it starts over, so it keeps at most max maps);
//   - likewise shares the bytes of managedFields' field sets (FieldsV1):
//     the entry a controller's create or update records is the same for
//     every pod of a ReplicaSet (~1 KB each, kept by the watch cache).
//
// Slices and pointers are not shared: doing so too (filed by the bytes of
// their contents once their children were shared) saved ~8% more of the
// live heap at 10,000 pods for twice the walk's cost (~11 against ~5 us a
// pod), which runs on each resource's one watch-cache and informer
// goroutine.
//
// Sharing a map between objects is safe only where nothing mutates the
// objects in place, which is the contract of both places Skiff uses it:
// the watch cache hands out its objects read-only (watchers get lazy deep
// copies, updates deep-copy the cached object first) and informer caches
// must not be mutated by their readers (upstream runs its controllers
// with the cache mutation detector to hold them to it). Objects on a
// request's read-modify-write path must not go through a Table.
package intern

import (
	"bytes"
	"hash/maphash"
	"reflect"
	"slices"
	"strings"
	"sync"
	"unique"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Limits on what is shared.
const (
	// maxString is the longest string interned: longer ones (large
	// annotations, last-applied configurations) rarely repeat.
	maxString = 256
	// maxMapLen and maxMapKey bound the maps shared (entries, and the
	// bytes of the key the table files them under).
	maxMapLen = 32
	maxMapKey = 2048
	// maxFields is the largest field set shared, fieldsBudget the most
	// bytes of field sets the table files before it starts over.
	maxFields    = 16 << 10
	fieldsBudget = 4 << 20
	// DefaultMax is the default bound on shared maps.
	DefaultMax = 8192
)

// Table is a set of canonical maps and the plans for walking each type. It
// is safe for concurrent use.
type Table struct {
	max int

	mu   sync.Mutex
	maps map[reflect.Type]map[string]any // by type, then contents
	n    int

	// fields are filed by a hash of their bytes; a hash shared by
	// different bytes shares nothing.
	seed        maphash.Seed
	fields      map[uint64][]byte
	fieldsBytes int

	plans sync.Map // reflect.Type -> *node (nil: nothing to do)
}

// New returns a table that keeps at most max shared maps (DefaultMax if
// max <= 0).
func New(max int) *Table {
	if max <= 0 {
		max = DefaultMax
	}
	return &Table{max: max, maps: map[reflect.Type]map[string]any{}, seed: maphash.MakeSeed(), fields: map[uint64][]byte{}}
}

// Len returns how many shared maps the table holds.
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
	kMap    // map[string-kind](string-kind | resource.Quantity): shared whole
	kFields // metav1.FieldsV1: its bytes shared whole
)

// node is the plan for walking one type: what to do with a value of it.
type node struct {
	kind   kind
	fields []field // kStruct
	elem   *node   // kPointer, kSlice
	quant  bool    // kMap: values are resource.Quantity
}

type field struct {
	index int
	node  *node
}

var (
	objectMetaType = reflect.TypeFor[metav1.ObjectMeta]()
	quantityType   = reflect.TypeFor[resource.Quantity]()
	fieldsV1Type   = reflect.TypeFor[metav1.FieldsV1]()
)

// unique per object: interning them costs a table entry and saves nothing.
var skipMetaFields = map[string]bool{"Name": true, "UID": true, "ResourceVersion": true, "SelfLink": true}

func (t *Table) plan(typ reflect.Type) *node {
	if n, ok := t.plans.Load(typ); ok {
		return n.(*node)
	}
	n := build(typ, map[reflect.Type]*node{})
	t.plans.Store(typ, n)
	return n
}

// build returns typ's plan, or nil if values of typ hold nothing to
// intern. inProgress breaks cycles (a recursive type keeps its plan).
func build(typ reflect.Type, inProgress map[reflect.Type]*node) *node {
	if n, ok := inProgress[typ]; ok {
		return n
	}
	switch typ.Kind() {
	case reflect.String:
		return &node{kind: kString}
	case reflect.Pointer, reflect.Slice:
		n := &node{kind: kPointer}
		if typ.Kind() == reflect.Slice {
			if typ.Elem().Kind() == reflect.Uint8 {
				return nil
			}
			n.kind = kSlice
		}
		inProgress[typ] = n
		if n.elem = build(typ.Elem(), inProgress); n.elem == nil {
			delete(inProgress, typ)
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
		if typ == fieldsV1Type {
			return &node{kind: kFields}
		}
		n := &node{kind: kStruct}
		inProgress[typ] = n
		for i := range typ.NumField() {
			f := typ.Field(i)
			if !f.IsExported() || typ == objectMetaType && skipMetaFields[f.Name] {
				continue
			}
			if fn := build(f.Type, inProgress); fn != nil {
				n.fields = append(n.fields, field{index: i, node: fn})
			}
		}
		if len(n.fields) == 0 {
			delete(inProgress, typ)
			return nil
		}
		return n
	}
	return nil
}

func (t *Table) walk(v reflect.Value, n *node) {
	switch n.kind {
	case kString:
		if s := v.String(); s != "" && len(s) <= maxString {
			v.SetString(unique.Make(s).Value())
		}
	case kStruct:
		for _, f := range n.fields {
			t.walk(v.Field(f.index), f.node)
		}
	case kPointer:
		if !v.IsNil() {
			t.walk(v.Elem(), n.elem)
		}
	case kSlice:
		for i := range v.Len() {
			t.walk(v.Index(i), n.elem)
		}
	case kMap:
		if v.Len() > 0 && v.Len() <= maxMapLen {
			t.shareMap(v, n.quant)
		}
	case kFields:
		raw := v.Field(0) // FieldsV1.Raw
		if b := raw.Bytes(); len(b) > 0 && len(b) <= maxFields {
			if shared := t.shareFields(b); shared != nil {
				raw.SetBytes(shared)
			}
		}
	}
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

// shareMap sets v to the table's map of v's type and contents, filing v
// as that map if there is none.
func (t *Table) shareMap(v reflect.Value, quant bool) {
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
	for _, e := range entries {
		b = append(append(b, e.k...), 0)
		if quant {
			q := e.v.Interface().(resource.Quantity)
			b = append(append(append(b, q.String()...), 0), q.Format...)
		} else {
			b = append(b, e.v.String()...)
		}
		if b = append(b, 0); len(b) > maxMapKey {
			*bp = b
			return
		}
	}
	*bp = b
	t.mu.Lock()
	byType := t.maps[v.Type()]
	shared, ok := byType[string(b)]
	if !ok {
		if t.n >= t.max {
			clear(t.maps)
			t.n = 0
			byType = nil
		}
		if byType == nil {
			byType = map[string]any{}
			t.maps[v.Type()] = byType
		}
		byType[string(b)] = v.Interface()
		t.n++
	}
	t.mu.Unlock()
	if ok {
		v.Set(reflect.ValueOf(shared))
	}
}

// keyBuffers hold the keys maps are filed under while they are built.
var keyBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}
