// Package registryauth is the token issuer of the bundled registry:
// distribution's token access controller sends every client without a valid
// Bearer token to it (the registry's auth.token.realm). A client presents its
// projected ServiceAccount token (audience-bound) as the Basic password; the
// issuer checks it with a TokenReview for that audience, maps the identity
// to the actions it may have (the controller: pull, push and delete on every
// repository; node agents: pull; anyone else: nothing, 401) and returns a
// short-lived JWT signed with a key distribution trusts (its
// rootcertbundle), naming the key by its JWK thumbprint (kid) so the
// registry checks a signature per request without a certificate chain.
//
// Every controller replica serves it, not only the leader: a token is
// independent of leadership, and a node must get one while the controllers
// elect a new leader. See docs/design.md, "Bundled registry authentication".
package registryauth
