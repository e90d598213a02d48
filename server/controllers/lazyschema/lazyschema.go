// Package lazyschema provides a CEL schema resolver that is built on first
// use and dropped when unused. Upstream's definitions resolver
// (k8s.io/apiserver/pkg/cel/openapi/resolver) builds the generated OpenAPI
// definitions of every built-in type when it is created (~8.5 MB of heap)
// and keeps them; the ValidatingAdmissionPolicy status controller, its
// user in the controller manager, needs them only while it type-checks a
// policy, which happens when a policy is created or changed.
package lazyschema

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/cel/openapi/resolver"
	"k8s.io/kube-openapi/pkg/validation/spec"
)

// Resolver is a resolver.SchemaResolver that calls build on first use and
// drops its result after idle without a call.
type Resolver struct {
	build func() resolver.SchemaResolver
	idle  time.Duration

	mu      sync.Mutex
	r       resolver.SchemaResolver
	lastUse time.Time
	timer   *time.Timer
}

var _ resolver.SchemaResolver = (*Resolver)(nil)

// New returns a Resolver over build's resolver.
func New(build func() resolver.SchemaResolver, idle time.Duration) *Resolver {
	return &Resolver{build: build, idle: idle}
}

// ResolveSchema resolves gvk with the built resolver, building it first if
// it is not held.
func (l *Resolver) ResolveSchema(gvk schema.GroupVersionKind) (*spec.Schema, error) {
	l.mu.Lock()
	if l.r == nil {
		l.r = l.build()
		l.timer = time.AfterFunc(l.idle, l.expire)
	}
	l.lastUse = time.Now()
	r := l.r
	l.mu.Unlock()
	return r.ResolveSchema(gvk)
}

// expire drops the resolver if it has not been used for idle, else checks
// again when it would be.
func (l *Resolver) expire() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.r == nil {
		return
	}
	if left := l.idle - time.Since(l.lastUse); left > 0 {
		l.timer.Reset(left)
		return
	}
	l.r, l.timer = nil, nil
}

// Held reports whether the built resolver is currently held.
func (l *Resolver) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r != nil
}
