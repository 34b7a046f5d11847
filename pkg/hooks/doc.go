// Package hooks receives registry push notifications (Docker Hub, Quay,
// GitHub Container Registry, Harbor, and a generic form for CI pipelines) and
// turns each into a check of every Tag whose normalized spec.image is the
// pushed repository and tag.
//
// A webhook is only a hint. Nothing in a payload is trusted beyond naming a
// repository and tag: no digest is ever taken from it. A check is requested by
// setting the Tag's tagger.dev/check annotation to a new value
// ("webhook:<provider>:<unix-nanos>"); the controller then resolves the tag
// upstream with a HEAD and records a generation only if the digest really
// moved. A forged payload can at most cause a HEAD.
//
// Coalescing is leading-edge: the first notification for a Tag is checked at
// once; within Options.Coalesce after that check, copies of the same payload
// (redeliveries, bursts) are dropped and any other payload causes one more
// check when the window ends. So one push costs one annotation patch, hence
// one upstream HEAD, with no added latency. The handler only records the Tag
// as pending; the worker (Server.Run) patches.
//
// Routes (everything else is 404):
//
//	POST /hooks/dockerhub/<token>  Docker Hub (it can only carry a secret in the URL)
//	POST /hooks/quay/<token>       Quay "Repository Push" notification
//	POST /hooks/github             GitHub "package"/"registry_package" events, X-Hub-Signature-256
//	POST /hooks/harbor             Harbor PUSH_ARTIFACT (pushImage before v2), Authorization header
//	POST /hooks/generic/<token>    {"image": "<reference>", "id": "<push id, optional>"}
//
// Answers: 202 {"checks": N} when N Tags were queued for a check; 200
// {"checks": 0, "ignored": "..."} for an authenticated, well-formed delivery
// that names nothing to check (a GitHub ping, a non-publish action, an
// untagged push); 400 malformed or incomplete payload; 401 bad token or
// signature; 404 unknown or disabled provider, or no Tag pins the image; 405
// not POST; 413 body over 1 MiB; 415 not application/json; 500 the Tag cache
// failed. Errors are {"error": "..."}, repeating at most 256 bytes of any
// payload field (the log line too); nothing changes on any error.
//
// GitHub signs the body, so its receiver reads the body (at most 1 MiB) and
// checks X-Hub-Signature-256 before anything else: without a valid
// signature every answer is 401, whatever the method, content type, size or
// content. An authenticated GitHub or Harbor delivery already processed is
// answered 200 {"ignored": "delivery already received"} and checks nothing,
// however late it comes (replay memory of the last 32768 deliveries, by
// X-GitHub-Delivery and by body hash; see replayKeys for why the body and
// why not Docker Hub, Quay or generic). Warnings about unauthenticated
// deliveries are rate limited (5, then one per 10s, the number held back
// in the next line and in tagger_webhook_log_suppressed_total).
//
// Secrets are compared in constant time and never logged or used as metric
// labels; logs carry the provider and the image, never the request path.
package hooks
