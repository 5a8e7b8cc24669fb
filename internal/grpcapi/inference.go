package grpcapi

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/predq/predq/internal/oip"
	pb "github.com/predq/predq/internal/oip/inferencepb"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/telemetry"
)

// inferenceServer is inference.GRPCInferenceService over the protocol's core: each call maps
// its request to oip's types, calls the core, and maps the answer or the error back.
type inferenceServer struct {
	pb.UnimplementedGRPCInferenceServiceServer
	inf Inference
}

func (s *inferenceServer) ServerLive(context.Context, *pb.ServerLiveRequest) (*pb.ServerLiveResponse, error) {
	return &pb.ServerLiveResponse{Live: s.inf.ServerLive()}, nil
}

func (s *inferenceServer) ServerReady(ctx context.Context, _ *pb.ServerReadyRequest) (*pb.ServerReadyResponse, error) {
	return &pb.ServerReadyResponse{Ready: s.inf.ServerReady(ctx)}, nil
}

func (s *inferenceServer) ModelReady(ctx context.Context, req *pb.ModelReadyRequest) (*pb.ModelReadyResponse, error) {
	ready, err := s.inf.ModelReady(ctx, req.GetName(), req.GetVersion())
	if err != nil {
		return nil, statusOf(err)
	}
	return &pb.ModelReadyResponse{Ready: ready}, nil
}

func (s *inferenceServer) ServerMetadata(context.Context, *pb.ServerMetadataRequest) (*pb.ServerMetadataResponse, error) {
	m := s.inf.ServerMetadata()
	return &pb.ServerMetadataResponse{Name: m.Name, Version: m.Version, Extensions: m.Extensions}, nil
}

func (s *inferenceServer) ModelMetadata(ctx context.Context, req *pb.ModelMetadataRequest) (*pb.ModelMetadataResponse, error) {
	m, err := s.inf.ModelMetadata(ctx, req.GetName(), req.GetVersion())
	if err != nil {
		return nil, statusOf(err)
	}
	return modelMetadataPB(m), nil
}

func (s *inferenceServer) ModelInfer(ctx context.Context, req *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	in, raw, err := inferRequest(req)
	if err != nil {
		return nil, statusOf(err)
	}
	p, _ := principalFrom(ctx)
	meta := prediction.Meta{RequestID: telemetry.RequestID(ctx), UserID: p.KeyID, Protocol: prediction.ProtocolOIPGRPC}
	resp, err := s.inf.Infer(ctx, meta, req.GetModelName(), req.GetModelVersion(), in)
	if err != nil {
		return nil, statusOf(err)
	}
	return inferResponsePB(&resp, raw), nil
}

// statusOf maps an error of the core to the protocol's status: its kind gives the code and
// its message the status message; an internal error reads "internal error" (its cause goes
// to the log).
func statusOf(err error) error {
	var code codes.Code
	switch oip.KindOf(err) {
	case oip.KindInvalid:
		code = codes.InvalidArgument
	case oip.KindNotFound:
		code = codes.NotFound
	case oip.KindUnavailable:
		code = codes.Unavailable
	case oip.KindUnauthenticated:
		code = codes.Unauthenticated
	default:
		code = codes.Internal
	}
	return &causeError{st: status.New(code, oip.MessageOf(err)), cause: err}
}
