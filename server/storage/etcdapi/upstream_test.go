package etcdapi_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/kubernetes"
	"go.etcd.io/etcd/server/v3/proxy/grpcproxy/adapter"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	"k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/etcd3"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	featuregatetesting "k8s.io/component-base/featuregate/testing"
	"k8s.io/utils/clock"

	"github.com/skiff-sh/skiff/server/storage/bolt"
	"github.com/skiff-sh/skiff/server/storage/etcdapi"
)

// These tests run upstream Kubernetes' own storage test suite
// (k8s.io/apiserver/pkg/storage/testing) against the upstream etcd3 store,
// talking to a bbolt backend through the in-process etcd API; the tests
// that watch run twice, on the in-process client's direct watcher and on
// the gRPC Watch service.

var (
	scheme = runtime.NewScheme()
	codecs = serializer.NewCodecFactory(scheme)
)

func init() {
	metav1.AddToGroupVersion(scheme, metav1.SchemeGroupVersion)
	utilruntime.Must(example.AddToScheme(scheme))
	utilruntime.Must(examplev1.AddToScheme(scheme))
}

const testPrefix = "test!"

type env struct {
	store  storage.Interface
	client *clientv3.Client
	be     *bolt.Backend
	kind   clientKind
}

// A client kind builds the etcd client the store talks through.
type clientKind struct {
	name string
	new  func(context.Context, *etcdapi.Server) *clientv3.Client
}

var (
	// inProcess is the API server's client: the KV calls the services
	// directly and the watches read the backend's (watcher.go).
	inProcess = clientKind{"inprocess", func(ctx context.Context, s *etcdapi.Server) *clientv3.Client { return s.Client(ctx) }}
	// served watches through the gRPC Watch service, as the clients that
	// dial the unix socket do.
	served = clientKind{"served", grpcWatchClient}
)

func grpcWatchClient(ctx context.Context, srv *etcdapi.Server) *clientv3.Client {
	c := srv.Client(ctx)
	_ = c.Watcher.Close()
	c.Watcher = clientv3.NewWatchFromWatchClient(adapter.WatchServerToWatchClient(srv), c)
	return c
}

func setup(t *testing.T, kind clientKind) (context.Context, env) {
	return setupWithProgress(t, kind, 10*time.Minute)
}

func setupWithProgress(t *testing.T, kind clientKind, progress time.Duration) (context.Context, env) {
	t.Helper()
	be, err := bolt.Open(bolt.Config{Path: filepath.Join(t.TempDir(), "db"), NoSync: true, WatchWindow: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srv := etcdapi.New(be)
	srv.ProgressInterval = progress
	c := kind.new(ctx, srv)
	t.Cleanup(func() { _ = c.Close() })
	kc := &kubernetes.Client{Client: c}
	kc.Kubernetes = kc
	versioner := storage.APIObjectVersioner{}
	compactor := etcd3.NewCompactor(c, 0, clock.RealClock{}, nil)
	t.Cleanup(compactor.Stop)
	codec := codecs.LegacyCodec(examplev1.SchemeGroupVersion)
	lease := etcd3.NewDefaultLeaseManagerConfig()
	lease.ReuseDurationSeconds = 1
	s, err := etcd3.New(kc, compactor, codec, func() runtime.Object { return &example.Pod{} }, func() runtime.Object { return &example.PodList{} },
		"", "/pods/", schema.GroupResource{Resource: "pods"}, storagetesting.NewPrefixTransformer([]byte(testPrefix), false), lease,
		etcd3.NewDefaultDecoder(codec, versioner), versioner)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return ctx, env{store: s, client: c, be: be, kind: kind}
}

func (e env) compaction() storagetesting.Compaction {
	return func(ctx context.Context, t *testing.T, resourceVersion string) {
		rv, err := storage.APIObjectVersioner{}.ParseResourceVersion(resourceVersion)
		if err != nil {
			t.Fatal(err)
		}
		var cur int64
		cur, _, _, err = etcd3.Compact(ctx, e.client, cur, int64(rv))
		if err != nil {
			_, _, _, err = etcd3.Compact(ctx, e.client, cur, int64(rv))
		}
		if err != nil {
			t.Fatal(err)
		}
		if utilfeature.DefaultFeatureGate.Enabled(features.ListFromCacheSnapshot) {
			// Wait until the store's compactor has observed it, as upstream's helper does.
			deadline := time.Now().Add(30 * time.Second)
			for e.store.CompactRevision() < int64(rv) {
				if time.Now().After(deadline) {
					t.Fatalf("compaction to %d not observed", rv)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
}

func (e env) increaseRV() storagetesting.IncreaseRVFunc {
	return func(ctx context.Context, t *testing.T) int64 {
		resp, err := e.client.KV.Put(ctx, "increaseRV", "ok")
		if err != nil {
			t.Fatalf("put: %v", err)
		}
		return resp.Header.Revision
	}
}

type prefixStore struct{ storage.Interface }

func (p prefixStore) UpdatePrefixTransformer(modifier storagetesting.PrefixTransformerModifier) func() {
	type transformerOwner interface {
		UpdatePrefixTransformer(storagetesting.PrefixTransformerModifier) func()
	}
	if o, ok := p.Interface.(transformerOwner); ok {
		return o.UpdatePrefixTransformer(modifier)
	}
	return func() {}
}

func noValidation(context.Context, *testing.T, string) {}

func TestUpstreamStorage(t *testing.T) {
	tests := []struct {
		name string
		run  func(context.Context, *testing.T, env)
	}{
		{"Create", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestCreate(ctx, t, e.store, noValidation)
		}},
		{"CreateWithTTL", func(ctx context.Context, t *testing.T, e env) { storagetesting.RunTestCreateWithTTL(ctx, t, e.store) }},
		{"CreateWithKeyExist", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestCreateWithKeyExist(ctx, t, e.store)
		}},
		{"Get", func(ctx context.Context, t *testing.T, e env) { storagetesting.RunTestGet(ctx, t, e.store) }},
		{"UnconditionalDelete", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestUnconditionalDelete(ctx, t, e.store)
		}},
		{"ConditionalDelete", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestConditionalDelete(ctx, t, e.store)
		}},
		{"DeleteWithSuggestion", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestDeleteWithSuggestion(ctx, t, e.store)
		}},
		{"DeleteWithConflict", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestDeleteWithConflict(ctx, t, e.store)
		}},
		{"PreconditionalDeleteWithSuggestion", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestPreconditionalDeleteWithSuggestion(ctx, t, e.store)
		}},
		{"GetListNonRecursive", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestGetListNonRecursive(ctx, t, e.increaseRV(), e.store)
		}},
		{"GetListRecursivePrefix", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestGetListRecursivePrefix(ctx, t, e.store)
		}},
		{"List", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestList(ctx, t, e.store, e.compaction(), false, nil)
		}},
		{"ConsistentList", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestConsistentList(ctx, t, e.store, e.increaseRV(), false, true, false)
		}},
		{"ListPaging", func(ctx context.Context, t *testing.T, e env) { storagetesting.RunTestListPaging(ctx, t, e.store) }},
		{"ListInconsistentContinuation", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestListInconsistentContinuation(ctx, t, e.store, e.compaction())
		}},
		{"ListResourceVersionMatch", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestListResourceVersionMatch(ctx, t, prefixStore{e.store})
		}},
		{"NamespaceScopedList", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestNamespaceScopedList(ctx, t, e.store)
		}},
		{"GuaranteedUpdate", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestGuaranteedUpdate(ctx, t, prefixStore{e.store}, noValidation)
		}},
		{"GuaranteedUpdateWithTTL", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestGuaranteedUpdateWithTTL(ctx, t, e.store)
		}},
		{"GuaranteedUpdateWithConflict", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestGuaranteedUpdateWithConflict(ctx, t, e.store)
		}},
		{"GuaranteedUpdateWithSuggestionAndConflict", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestGuaranteedUpdateWithSuggestionAndConflict(ctx, t, e.store)
		}},
		{"CompactRevision", func(_ context.Context, t *testing.T, e0 env) {
			// Observing compactions made by others needs the compactor's watch,
			// which upstream enables with ListFromCacheSnapshot.
			featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.ListFromCacheSnapshot, true)
			ctx, e := setup(t, e0.kind)
			storagetesting.RunTestCompactRevision(ctx, t, e.store, e.increaseRV(), e.compaction())
		}},
		{"Watch", func(ctx context.Context, t *testing.T, e env) { storagetesting.RunTestWatch(ctx, t, e.store) }},
		{"WatchFromZero", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestWatchFromZero(ctx, t, e.store, e.compaction())
		}},
		{"DeleteTriggerWatch", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestDeleteTriggerWatch(ctx, t, e.store)
		}},
		{"WatchFromNonZero", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestWatchFromNonZero(ctx, t, e.store)
		}},
		{"DelayedWatchDelivery", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestDelayedWatchDelivery(ctx, t, e.store)
		}},
		{"WatchContextCancel", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestWatchContextCancel(ctx, t, e.store)
		}},
		{"WatchDeleteEventObjectHaveLatestRV", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestWatchDeleteEventObjectHaveLatestRV(ctx, t, e.store)
		}},
		{"ProgressNotify", func(_ context.Context, t *testing.T, e0 env) {
			ctx, e := setupWithProgress(t, e0.kind, time.Second)
			storagetesting.RunOptionalTestProgressNotify(ctx, t, e.store, e.increaseRV())
		}},
		{"WatchDispatchBookmarkEvents", func(_ context.Context, t *testing.T, e0 env) {
			ctx, e := setupWithProgress(t, e0.kind, time.Second)
			storagetesting.RunTestWatchDispatchBookmarkEvents(ctx, t, e.store, false)
		}},
		{"ClusterScopedWatch", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestClusterScopedWatch(ctx, t, e.store)
		}},
		{"NamespaceScopedWatch", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunTestNamespaceScopedWatch(ctx, t, e.store)
		}},
		{"WatchSemantics", func(ctx context.Context, t *testing.T, e env) { storagetesting.RunWatchSemantics(ctx, t, e.store) }},
		{"WatchSemanticInitialEventsExtended", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunWatchSemanticInitialEventsExtended(ctx, t, e.store)
		}},
		{"WatchListMatchSingle", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunWatchListMatchSingle(ctx, t, e.store)
		}},
		{"SendInitialEventsBackwardCompatibility", func(ctx context.Context, t *testing.T, e env) {
			storagetesting.RunSendInitialEventsBackwardCompatibility(ctx, t, e.store)
		}},
	}
	for _, tc := range tests {
		// Tests that watch run on both watchers; the rest need one.
		kinds := []clientKind{inProcess}
		if strings.Contains(tc.name, "Watch") || tc.name == "CompactRevision" || tc.name == "ProgressNotify" {
			kinds = append(kinds, served)
		}
		for _, kind := range kinds {
			t.Run(tc.name+"/"+kind.name, func(t *testing.T) {
				ctx, e := setup(t, kind)
				tc.run(ctx, t, e)
			})
		}
	}
}
