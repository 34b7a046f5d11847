// Package repull makes a node's local image records agree with the pins:
// when a served pin moves, the record of that tag in containerd's k8s.io
// namespace is re-pulled through the CRI image service (the path kubelet
// uses), so a pod started later with imagePullPolicy IfNotPresent runs the
// pinned digest.
package repull

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ImageService is the part of the CRI image service the converger needs.
type ImageService interface {
	// RepoDigests returns the repo digests of the image recorded under ref,
	// and false when the node has no image under that name.
	RepoDigests(ctx context.Context, ref string) ([]string, bool, error)
	// Pull pulls ref, which re-resolves the tag (through the mirror) and
	// points the node's record of it at the result.
	Pull(ctx context.Context, ref string) error
}

// CRI talks to the container runtime's CRI image service over gRPC.
type CRI struct {
	conn   *grpc.ClientConn
	images runtimeapi.ImageServiceClient
}

// DialCRI connects to a CRI endpoint such as unix:///run/containerd/containerd.sock.
// The connection is lazy: an absent socket fails the first call, not this one.
func DialCRI(endpoint string) (*CRI, error) {
	target := endpoint
	if strings.HasPrefix(target, "/") {
		target = "unix://" + target
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial CRI endpoint %s: %w", endpoint, err)
	}
	return &CRI{conn: conn, images: runtimeapi.NewImageServiceClient(conn)}, nil
}

// Close closes the connection.
func (c *CRI) Close() error { return c.conn.Close() }

// RepoDigests implements ImageService.
func (c *CRI) RepoDigests(ctx context.Context, ref string) ([]string, bool, error) {
	resp, err := c.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		return nil, false, fmt.Errorf("CRI image status of %s: %w", ref, err)
	}
	if resp.GetImage() == nil {
		return nil, false, nil
	}
	return resp.GetImage().GetRepoDigests(), true, nil
}

// Pull implements ImageService.
func (c *CRI) Pull(ctx context.Context, ref string) error {
	if _, err := c.images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		return fmt.Errorf("CRI pull of %s: %w", ref, err)
	}
	return nil
}
