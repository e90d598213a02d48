// Package etcdapi serves a storage.Backend through the etcd v3 API (KV,
// Watch, Lease and the Status call of Maintenance), so that the upstream
// Kubernetes etcd3 storage runs on Skiff's own stores unchanged.
//
// NewClient wires the services into an in-process *clientv3.Client without a
// network hop (its Watcher reads the backend's watches directly: see
// watcher.go); Register exposes the same services on a gRPC server (used for
// the unix socket that upstream storage factories dial).
package etcdapi

import (
	"context"
	"errors"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/proxy/grpcproxy/adapter"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/server/storage"
)

// Version is what Status reports as the etcd server version. The
// Kubernetes etcd client only checks that it parses.
const Version = "3.7.3"

// Server implements the etcd v3 gRPC services on a Backend.
type Server struct {
	pb.UnimplementedKVServer
	pb.UnimplementedWatchServer
	pb.UnimplementedLeaseServer
	pb.UnimplementedMaintenanceServer

	be storage.Backend
	// ProgressInterval is how often idle watches that asked for progress
	// notifications get one (etcd's default is 10 minutes).
	ProgressInterval time.Duration
}

// New returns the services for be.
func New(be storage.Backend) *Server {
	return &Server{be: be, ProgressInterval: 10 * time.Minute}
}

// Register adds the services to a gRPC server.
func (s *Server) Register(g *grpc.Server) {
	pb.RegisterKVServer(g, s)
	pb.RegisterWatchServer(g, s)
	pb.RegisterLeaseServer(g, s)
	pb.RegisterMaintenanceServer(g, s)
}

// NewClient returns an etcd client bound to be in-process. Closing the client
// does not close the backend.
func NewClient(ctx context.Context, be storage.Backend) *clientv3.Client {
	return New(be).Client(ctx)
}

// Client returns an etcd client bound to the services in-process.
func (s *Server) Client(ctx context.Context) *clientv3.Client {
	c := clientv3.NewCtxClient(ctx)
	c.KV = clientv3.NewKVFromKVClient(adapter.KvServerToKvClient(s), c)
	w := s.newWatcher()
	context.AfterFunc(c.Ctx(), func() { _ = w.Close() })
	c.Watcher = w
	c.Lease = clientv3.NewLeaseFromLeaseClient(adapter.LeaseServerToLeaseClient(s), c, 5*time.Second)
	c.Maintenance = clientv3.NewMaintenanceFromMaintenanceClient(adapter.MaintenanceServerToMaintenanceClient(s), c)
	return c
}

func (s *Server) header(rev int64) *pb.ResponseHeader {
	if rev == 0 {
		rev = s.be.CurrentRevision()
	}
	return &pb.ResponseHeader{ClusterId: 1, MemberId: 1, Revision: rev, RaftTerm: 1}
}

// toGRPC maps backend errors to the errors an etcd server returns.
func toGRPC(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, storage.ErrCompacted):
		return rpctypes.ErrGRPCCompacted
	case errors.Is(err, storage.ErrFutureRev):
		return rpctypes.ErrGRPCFutureRev
	case errors.Is(err, storage.ErrLeaseNotFound):
		return rpctypes.ErrGRPCLeaseNotFound
	case errors.Is(err, storage.ErrLeaseExists):
		return rpctypes.ErrGRPCLeaseExist
	case errors.Is(err, storage.ErrDuplicateKey):
		return rpctypes.ErrGRPCDuplicateKey
	case errors.Is(err, storage.ErrInvalidKey):
		return status.Error(codes.InvalidArgument, "etcdserver: "+err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, storage.ErrClosed):
		return status.Error(codes.Unavailable, "etcdserver: "+err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}

func toKV(kv storage.KeyValue) *mvccpb.KeyValue {
	return &mvccpb.KeyValue{
		Key:            kv.Key,
		Value:          kv.Value,
		CreateRevision: kv.CreateRevision,
		ModRevision:    kv.ModRevision,
		Version:        kv.Version,
		Lease:          kv.Lease,
	}
}

func rangeOptions(r *pb.RangeRequest) (storage.RangeOptions, error) {
	if r.SortOrder != pb.RangeRequest_NONE && !(r.SortOrder == pb.RangeRequest_ASCEND && r.SortTarget == pb.RangeRequest_KEY) {
		return storage.RangeOptions{}, status.Error(codes.Unimplemented, "etcdserver: sorted ranges are not supported")
	}
	if r.MinModRevision != 0 || r.MaxModRevision != 0 || r.MinCreateRevision != 0 || r.MaxCreateRevision != 0 {
		return storage.RangeOptions{}, status.Error(codes.Unimplemented, "etcdserver: revision filters are not supported")
	}
	return storage.RangeOptions{Revision: r.Revision, Limit: r.Limit, CountOnly: r.CountOnly, KeysOnly: r.KeysOnly}, nil
}

func rangeResponse(res storage.RangeResult, hdr *pb.ResponseHeader) *pb.RangeResponse {
	out := &pb.RangeResponse{Header: hdr, More: res.More, Count: res.Count}
	if len(res.KVs) > 0 {
		out.Kvs = make([]*mvccpb.KeyValue, len(res.KVs))
		for i, kv := range res.KVs {
			out.Kvs[i] = toKV(kv)
		}
	}
	return out
}

// Range implements pb.KVServer.
func (s *Server) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	opts, err := rangeOptions(r)
	if err != nil {
		return nil, err
	}
	res, err := s.be.Range(ctx, r.Key, r.RangeEnd, opts)
	if err != nil {
		return nil, toGRPC(err)
	}
	return rangeResponse(res, s.header(res.Revision)), nil
}

// Put implements pb.KVServer.
func (s *Server) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	op, err := putOp(r)
	if err != nil {
		return nil, err
	}
	res, err := s.be.Txn(ctx, nil, []storage.Op{op}, nil)
	if err != nil {
		return nil, toGRPC(err)
	}
	return putResponse(res.Results[0], s.header(res.Revision)), nil
}

func putOp(r *pb.PutRequest) (storage.Op, error) {
	if r.IgnoreValue || r.IgnoreLease {
		return storage.Op{}, status.Error(codes.Unimplemented, "etcdserver: ignore_value and ignore_lease are not supported")
	}
	return storage.Op{Type: storage.OpPut, Key: r.Key, Value: r.Value, Lease: r.Lease, PrevKV: r.PrevKv}, nil
}

func putResponse(r storage.OpResult, hdr *pb.ResponseHeader) *pb.PutResponse {
	out := &pb.PutResponse{Header: hdr}
	if len(r.PrevKVs) > 0 {
		out.PrevKv = toKV(r.PrevKVs[0])
	}
	return out
}

// DeleteRange implements pb.KVServer.
func (s *Server) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	res, err := s.be.Txn(ctx, nil, []storage.Op{deleteOp(r)}, nil)
	if err != nil {
		return nil, toGRPC(err)
	}
	return deleteResponse(res.Results[0], s.header(res.Revision)), nil
}

func deleteOp(r *pb.DeleteRangeRequest) storage.Op {
	return storage.Op{Type: storage.OpDelete, Key: r.Key, End: r.RangeEnd, PrevKV: r.PrevKv}
}

func deleteResponse(r storage.OpResult, hdr *pb.ResponseHeader) *pb.DeleteRangeResponse {
	out := &pb.DeleteRangeResponse{Header: hdr, Deleted: r.Deleted}
	for _, kv := range r.PrevKVs {
		out.PrevKvs = append(out.PrevKvs, toKV(kv))
	}
	return out
}

// Txn implements pb.KVServer for transactions without nested transactions.
func (s *Server) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	cmps := make([]storage.Compare, 0, len(r.Compare))
	for _, c := range r.Compare {
		if len(c.RangeEnd) > 0 {
			return nil, status.Error(codes.Unimplemented, "etcdserver: range compares are not supported")
		}
		cmp := storage.Compare{Key: c.Key, Result: storage.CompareResult(c.Result)}
		switch c.Target {
		case pb.Compare_VERSION:
			cmp.Target, cmp.Int = storage.CompareVersion, c.GetVersion()
		case pb.Compare_CREATE:
			cmp.Target, cmp.Int = storage.CompareCreate, c.GetCreateRevision()
		case pb.Compare_MOD:
			cmp.Target, cmp.Int = storage.CompareMod, c.GetModRevision()
		case pb.Compare_VALUE:
			cmp.Target, cmp.Value = storage.CompareValue, c.GetValue()
		case pb.Compare_LEASE:
			cmp.Target, cmp.Int = storage.CompareLease, c.GetLease()
		default:
			return nil, status.Errorf(codes.InvalidArgument, "etcdserver: unknown compare target %v", c.Target)
		}
		cmps = append(cmps, cmp)
	}
	success, err := txnOps(r.Success)
	if err != nil {
		return nil, err
	}
	failure, err := txnOps(r.Failure)
	if err != nil {
		return nil, err
	}
	res, err := s.be.Txn(ctx, cmps, success, failure)
	if err != nil {
		return nil, toGRPC(err)
	}
	hdr := s.header(res.Revision)
	ops := success
	if !res.Succeeded {
		ops = failure
	}
	out := &pb.TxnResponse{Header: hdr, Succeeded: res.Succeeded, Responses: make([]*pb.ResponseOp, len(ops))}
	for i, op := range ops {
		switch op.Type {
		case storage.OpRange:
			out.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{ResponseRange: rangeResponse(*res.Results[i].Range, hdr)}}
		case storage.OpPut:
			out.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponsePut{ResponsePut: putResponse(res.Results[i], hdr)}}
		case storage.OpDelete:
			out.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: deleteResponse(res.Results[i], hdr)}}
		}
	}
	return out, nil
}

func txnOps(reqs []*pb.RequestOp) ([]storage.Op, error) {
	ops := make([]storage.Op, 0, len(reqs))
	for _, r := range reqs {
		switch req := r.Request.(type) {
		case *pb.RequestOp_RequestRange:
			opts, err := rangeOptions(req.RequestRange)
			if err != nil {
				return nil, err
			}
			ops = append(ops, storage.Op{Type: storage.OpRange, Key: req.RequestRange.Key, End: req.RequestRange.RangeEnd, Range: opts})
		case *pb.RequestOp_RequestPut:
			op, err := putOp(req.RequestPut)
			if err != nil {
				return nil, err
			}
			ops = append(ops, op)
		case *pb.RequestOp_RequestDeleteRange:
			ops = append(ops, deleteOp(req.RequestDeleteRange))
		default:
			return nil, status.Error(codes.Unimplemented, "etcdserver: nested transactions are not supported")
		}
	}
	return ops, nil
}

// Compact implements pb.KVServer.
func (s *Server) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	if err := s.be.Compact(ctx, r.Revision); err != nil {
		return nil, toGRPC(err)
	}
	return &pb.CompactionResponse{Header: s.header(0)}, nil
}

// LeaseGrant implements pb.LeaseServer.
func (s *Server) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	info, err := s.be.LeaseGrant(ctx, r.ID, r.TTL)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.LeaseGrantResponse{Header: s.header(0), ID: info.ID, TTL: info.TTL}, nil
}

// LeaseRevoke implements pb.LeaseServer.
func (s *Server) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	rev, err := s.be.LeaseRevoke(ctx, r.ID)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.LeaseRevokeResponse{Header: s.header(rev)}, nil
}

// LeaseKeepAlive implements pb.LeaseServer.
func (s *Server) LeaseKeepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		info, err := s.be.LeaseKeepAlive(stream.Context(), req.ID)
		resp := &pb.LeaseKeepAliveResponse{Header: s.header(0), ID: req.ID, TTL: info.TTL}
		if err != nil {
			resp.TTL = 0
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// LeaseTimeToLive implements pb.LeaseServer.
func (s *Server) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	info, err := s.be.LeaseTimeToLive(ctx, r.ID, r.Keys)
	if err != nil {
		return &pb.LeaseTimeToLiveResponse{Header: s.header(0), ID: r.ID, TTL: -1}, nil
	}
	return &pb.LeaseTimeToLiveResponse{Header: s.header(0), ID: r.ID, TTL: info.TTL, GrantedTTL: info.GrantedTTL, Keys: info.Keys}, nil
}

// LeaseLeases implements pb.LeaseServer.
func (s *Server) LeaseLeases(ctx context.Context, _ *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	ids, err := s.be.Leases(ctx)
	if err != nil {
		return nil, toGRPC(err)
	}
	out := &pb.LeaseLeasesResponse{Header: s.header(0)}
	for _, id := range ids {
		out.Leases = append(out.Leases, &pb.LeaseStatus{ID: id})
	}
	return out, nil
}

// Status implements the part of pb.MaintenanceServer clients use for health.
func (s *Server) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	size := s.be.DBSize()
	return &pb.StatusResponse{
		Header: s.header(0), Version: Version, DbSize: size, DbSizeInUse: size,
		Leader: 1, RaftIndex: uint64(s.be.CurrentRevision()), RaftTerm: 1, RaftAppliedIndex: uint64(s.be.CurrentRevision()),
	}, nil
}
