package lazyschema

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/cel/openapi/resolver"
	"k8s.io/kube-openapi/pkg/validation/spec"
)

type fixed map[schema.GroupVersionKind]*spec.Schema

func (f fixed) ResolveSchema(gvk schema.GroupVersionKind) (*spec.Schema, error) {
	if s, ok := f[gvk]; ok {
		return s, nil
	}
	return nil, resolver.ErrSchemaNotFound
}

func TestResolver(t *testing.T) {
	deploy := schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
	want := &spec.Schema{}
	var builds atomic.Int32
	l := New(func() resolver.SchemaResolver {
		builds.Add(1)
		return fixed{deploy: want}
	}, time.Second)

	if l.Held() || builds.Load() != 0 {
		t.Fatal("built before first use")
	}
	for i, tc := range []struct {
		gvk     schema.GroupVersionKind
		wantErr error
	}{
		{deploy, nil},
		{schema.GroupVersionKind{Version: "v1", Kind: "Unknown"}, resolver.ErrSchemaNotFound},
		{deploy, nil},
	} {
		got, err := l.ResolveSchema(tc.gvk)
		if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && got != want) {
			t.Errorf("call %d (%v): %v, %v", i, tc.gvk, got, err)
		}
	}
	if n := builds.Load(); n != 1 {
		t.Fatalf("%d builds for calls within the idle time, want 1", n)
	}
	// Use keeps it held past the first deadline.
	for range 6 {
		time.Sleep(250 * time.Millisecond)
		if _, err := l.ResolveSchema(deploy); err != nil {
			t.Fatal(err)
		}
	}
	if n := builds.Load(); n != 1 || !l.Held() {
		t.Fatalf("dropped while in use: %d builds, held %t", n, l.Held())
	}
	deadline := time.Now().Add(5 * time.Second)
	for l.Held() {
		if time.Now().After(deadline) {
			t.Fatal("still held 5 s after the last use")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := l.ResolveSchema(deploy); err != nil || builds.Load() != 2 {
		t.Fatalf("after expiry: %v, %d builds, want a rebuild", err, builds.Load())
	}
}
