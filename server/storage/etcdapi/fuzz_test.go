package etcdapi_test

import (
	"context"
	"path/filepath"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/skiff-sh/skiff/server/storage/bolt"
	"github.com/skiff-sh/skiff/server/storage/etcdapi"
)

// FuzzTxn feeds arbitrary transaction requests through the etcd API layer
// into a real backend: malformed requests must give errors, never panics,
// and must leave the store readable.
func FuzzTxn(f *testing.F) {
	seed := &pb.TxnRequest{
		Compare: []*pb.Compare{{Key: []byte("/a"), Target: pb.Compare_MOD, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_ModRevision{ModRevision: 0}}},
		Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("/a"), Value: []byte("v")}}}},
		Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("/a")}}}},
	}
	b, _ := proto.Marshal(seed)
	f.Add(b)
	del := &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("/"), RangeEnd: []byte{0}}}}}}
	b, _ = proto.Marshal(del)
	f.Add(b)
	be, err := bolt.Open(bolt.Config{Path: filepath.Join(f.TempDir(), "db"), NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	defer be.Close()
	srv := etcdapi.New(be)
	f.Fuzz(func(t *testing.T, data []byte) {
		var req pb.TxnRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			return
		}
		_, _ = srv.Txn(context.Background(), &req)
		if _, err := srv.Range(context.Background(), &pb.RangeRequest{Key: []byte{0x01}, RangeEnd: []byte{0}}); err != nil {
			t.Fatalf("store unreadable after a fuzzed transaction: %v", err)
		}
	})
}
