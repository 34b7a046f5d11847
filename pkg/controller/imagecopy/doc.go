// Package imagecopy copies a pinned generation's whole tree (the root
// manifest, every child manifest of an index, every config and layer blob)
// from an upstream registry into the bundled registry, under the cache
// repository of its reference.
//
// A stock distribution registry refuses a manifest whose blobs it lacks, so
// the copy goes bottom-up: blobs first, then child manifests by digest, then
// the root by digest and under a tag (so the registry keeps it).
//
// Blobs are streamed: the upstream response body is the body of one PUT to
// the bundled registry, through a reader that hashes and counts the bytes and
// fails the read (aborting the PUT before its last byte) on a size or digest
// mismatch; the registry checks the digest parameter as well. Uploads are
// single PUTs, so nothing partial is ever committed, and a copy run again
// after a crash skips whatever the bundled registry already has (HEAD first).
// A blob another cache repository holds is mounted rather than uploaded.
package imagecopy
