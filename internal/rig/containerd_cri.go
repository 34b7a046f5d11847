package rig

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/distribution/reference"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Pull pulls ref through the CRI image service without credentials, as
// kubelet does, and returns the image reference containerd answers (the
// image ID, i.e. the config digest).
func (c *Containerd) Pull(ctx context.Context, ref string) (string, error) {
	img, err := c.images()
	if err != nil {
		return "", err
	}
	resp, err := img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		return "", fmt.Errorf("CRI pull %s: %w", ref, err)
	}
	return resp.GetImageRef(), nil
}

// status is the CRI ImageStatus of ref; nil when the image is not present.
func (c *Containerd) status(ctx context.Context, ref string) (*runtimeapi.Image, error) {
	img, err := c.images()
	if err != nil {
		return nil, err
	}
	resp, err := img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		return nil, fmt.Errorf("CRI image status %s: %w", ref, err)
	}
	return resp.GetImage(), nil
}

// ImageDigest is the manifest (or index) digest containerd recorded for ref
// (a tag, or a digest reference), and whether the node has ref at all. It is
// read from the CRI ImageStatus RepoDigests: the digest of the entry for
// ref's repository.
//
// Several entries for one repository mean several manifests of it share the
// image's config (an index and its platform manifest pulled by digest, say);
// then the CRI answer does not say which one the tag names, and the image
// record of the tag itself is read with ctr.
func (c *Containerd) ImageDigest(ctx context.Context, ref string) (digest string, present bool, err error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", false, fmt.Errorf("rig containerd: parse %q: %w", ref, err)
	}
	im, err := c.status(ctx, ref)
	if err != nil || im == nil {
		return "", false, err
	}
	if d, ok := named.(reference.Digested); ok {
		return d.Digest().String(), true, nil
	}
	var found []string
	for _, rd := range im.GetRepoDigests() {
		repo, dgst, ok := strings.Cut(rd, "@")
		if ok && repo == named.Name() && !slices.Contains(found, dgst) {
			found = append(found, dgst)
		}
	}
	switch len(found) {
	case 0:
		return "", true, fmt.Errorf("rig containerd: image %s (%s) has no repo digest for %s: %v", ref, im.GetId(), named.Name(), im.GetRepoDigests())
	case 1:
		return found[0], true, nil
	}
	name := reference.TagNameOnly(named).String()
	d, err := c.recordDigest(ctx, name)
	if err != nil {
		return "", true, fmt.Errorf("rig containerd: %s has repo digests %v: %w", ref, found, err)
	}
	return d, true, nil
}

// recordDigest is the target digest of containerd's image record name.
func (c *Containerd) recordDigest(ctx context.Context, name string) (string, error) {
	out, err := c.Ctr(ctx, "images", "ls", "name=="+strconv.Quote(name))
	if err != nil {
		return "", err
	}
	// REF TYPE DIGEST SIZE PLATFORMS LABELS
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 3 && f[0] == name {
			return f[2], nil
		}
	}
	return "", fmt.Errorf("no image record %s in ctr output:\n%s", name, out)
}

// ImageID is the CRI image ID (the config digest) that ref resolves to on
// the node, and whether the node has ref.
func (c *Containerd) ImageID(ctx context.Context, ref string) (id string, present bool, err error) {
	im, err := c.status(ctx, ref)
	if err != nil || im == nil {
		return "", false, err
	}
	return im.GetId(), true, nil
}

// Images lists the node's CRI images.
func (c *Containerd) Images(ctx context.Context) ([]*runtimeapi.Image, error) {
	img, err := c.images()
	if err != nil {
		return nil, err
	}
	resp, err := img.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		return nil, fmt.Errorf("CRI list images: %w", err)
	}
	return resp.GetImages(), nil
}

// RemoveImage removes the image ref resolves to through the CRI. As in
// crictl rmi, that is the whole image: every tag and digest reference of the
// same image ID, not just ref. Removing an absent image is not an error.
func (c *Containerd) RemoveImage(ctx context.Context, ref string) error {
	img, err := c.images()
	if err != nil {
		return err
	}
	if _, err := img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		return fmt.Errorf("CRI remove image %s: %w", ref, err)
	}
	return nil
}

// RemoveAllImages removes every CRI image, so a scenario starts from an
// empty image store. containerd deletes the last reference of each image
// synchronously with garbage collection, so the content goes too (see
// ContentDigests).
func (c *Containerd) RemoveAllImages(ctx context.Context) error {
	images, err := c.Images(ctx)
	if err != nil {
		return err
	}
	for _, im := range images {
		if err := c.RemoveImage(ctx, im.GetId()); err != nil {
			return err
		}
	}
	left, err := c.Images(ctx)
	if err != nil {
		return err
	}
	if len(left) > 0 {
		ids := make([]string, len(left))
		for i, im := range left {
			ids[i] = im.GetId()
		}
		return fmt.Errorf("rig containerd: images left after removing all: %v", ids)
	}
	return nil
}

// ContentDigests lists the digests of every blob in the k8s.io content store
// (indexes, manifests, configs, layers), sorted, e.g. to see which platform's
// manifest a pull of an index fetched.
func (c *Containerd) ContentDigests(ctx context.Context) ([]string, error) {
	out, err := c.Ctr(ctx, "content", "ls", "-q")
	if err != nil {
		return nil, err
	}
	var ds []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			ds = append(ds, l)
		}
	}
	slices.Sort(ds)
	return ds, nil
}
