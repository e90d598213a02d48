package layout_test

import (
	"reflect"
	"testing"

	"github.com/skiff-sh/skiff/internal/layout"
)

type (
	name  string
	inner struct {
		A int32
		B []string
	}
	innerTwin struct {
		A int32
		B []name
	}
	outer struct {
		I    inner
		M    map[string]*inner
		Next *outer
	}
	outerTwin struct {
		I    innerTwin
		M    map[name]*innerTwin
		Next *outerTwin
	}
	swapped struct {
		B []string
		A int32
	}
	renamed struct {
		A int32
		C []string
	}
	wider struct {
		A int64
		B []string
	}
	withAny     struct{ X any }
	withString  struct{ X fmtStringer }
	fmtStringer interface{ String() string }
)

func TestSame(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b any
		want bool
	}{
		{"identical", inner{}, inner{}, true},
		{"named string types, recursive", outer{}, outerTwin{}, true},
		{"fields reordered", inner{}, swapped{}, false},
		{"field renamed", inner{}, renamed{}, false},
		{"field wider", inner{}, wider{}, false},
		{"different interfaces", withAny{}, withString{}, false},
		{"string and int", "", 0, false},
		{"arrays of different length", [2]int{}, [3]int{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := layout.Same(reflect.TypeOf(tc.a), reflect.TypeOf(tc.b)); got != tc.want {
				t.Fatalf("Same(%T, %T) = %v, want %v", tc.a, tc.b, got, tc.want)
			}
		})
	}
}
