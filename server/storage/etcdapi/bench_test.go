package etcdapi_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/skiff-sh/skiff/server/storage/bolt"
	"github.com/skiff-sh/skiff/server/storage/etcdapi"
)

func benchCreates(b *testing.B, c *clientv3.Client) {
	var n atomic.Int64
	value := string(make([]byte, 300))
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			key := fmt.Sprintf("/registry/configmaps/bench/cm-%d", n.Add(1))
			_, err := c.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", 0)).
				Then(clientv3.OpPut(key, value)).Else(clientv3.OpGet(key)).Commit()
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}

func openBench(b *testing.B) *bolt.Backend {
	be, err := bolt.Open(bolt.Config{Path: filepath.Join(b.TempDir(), "state.db")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { be.Close() })
	return be
}

// BenchmarkTxnInProcess: etcd client bound in-process to the backend.
func BenchmarkTxnInProcess(b *testing.B) {
	be := openBench(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	benchCreates(b, etcdapi.NewClient(ctx, be))
}

// BenchmarkTxnUnixGRPC: etcd client over gRPC on a unix socket, as the API
// server uses it.
func BenchmarkTxnUnixGRPC(b *testing.B) {
	be := openBench(b)
	sock := filepath.Join(b.TempDir(), "etcd.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	g := grpc.NewServer()
	etcdapi.New(be).Register(g)
	go g.Serve(lis)
	defer g.Stop()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + sock}, DialTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	benchCreates(b, c)
}
