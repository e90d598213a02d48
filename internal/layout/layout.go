// Package layout tells whether two Go types have the same memory layout,
// field by field, so that a value of one may be read as the other: the
// check conversion-gen makes before it converts between an API group's
// internal and versioned types with an unsafe cast instead of a copy.
package layout

import "reflect"

// Same reports whether a and b have the same layout: the same kind, size
// and alignment; structs with the same fields (names, offsets, embedding)
// in order, each of the same layout; pointers, slices, arrays and maps of
// elements (and keys) of the same layout. Interfaces, channels and
// functions must be the same type. Recursive types are handled.
func Same(a, b reflect.Type) bool {
	return same(a, b, map[[2]reflect.Type]bool{})
}

func same(a, b reflect.Type, seen map[[2]reflect.Type]bool) bool {
	if a == b {
		return true
	}
	if a.Kind() != b.Kind() || a.Size() != b.Size() || a.Align() != b.Align() {
		return false
	}
	pair := [2]reflect.Type{a, b}
	if r, ok := seen[pair]; ok {
		return r // true while in progress: a cycle adds no difference
	}
	seen[pair] = true
	r := sameKind(a, b, seen)
	seen[pair] = r
	return r
}

func sameKind(a, b reflect.Type, seen map[[2]reflect.Type]bool) bool {
	switch a.Kind() {
	case reflect.Struct:
		if a.NumField() != b.NumField() {
			return false
		}
		for i := range a.NumField() {
			fa, fb := a.Field(i), b.Field(i)
			if fa.Name != fb.Name || fa.Offset != fb.Offset || fa.Anonymous != fb.Anonymous || !same(fa.Type, fb.Type, seen) {
				return false
			}
		}
		return true
	case reflect.Array:
		return a.Len() == b.Len() && same(a.Elem(), b.Elem(), seen)
	case reflect.Pointer, reflect.Slice:
		return same(a.Elem(), b.Elem(), seen)
	case reflect.Map:
		return same(a.Key(), b.Key(), seen) && same(a.Elem(), b.Elem(), seen)
	case reflect.Interface, reflect.Chan, reflect.Func, reflect.UnsafePointer:
		return false // a != b (checked first)
	default: // booleans, numbers, strings: kind and size suffice
		return true
	}
}
