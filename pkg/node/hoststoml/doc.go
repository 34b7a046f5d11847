// Package hoststoml writes containerd hosts.toml files so that containerd asks the
// node agent's mirror before a registry.
//
// containerd reads <config_path>/<registry>/hosts.toml on every pull (no
// restart needed) and tries its [host."..."] entries in file order, then the
// server. For each registry with pins, tagger's file lists the mirror first
// (capabilities pull and resolve only, a short dial_timeout), then the
// entries of the file it replaced, then the upstream server:
//
//	# managed by tagger node-agent; the previous file is kept in ../_backup
//	server = "https://registry-1.docker.io"
//
//	[host."http://127.0.0.1:5050"]
//	  capabilities = ["pull", "resolve"]
//	  dial_timeout = "200ms"
//
// A strict registry has the mirror as its server and nothing else: a pin can
// never be bypassed, but every pull from that registry fails while the mirror
// is down.
//
// # Directories
//
// For "host:port" containerd looks up "host_port_" first, then "host:port",
// then _default; tagger writes "host:port" and moves a "host_port_" it did not
// write aside so that it cannot shadow tagger's. The first line of tagger's
// files is a marker: a directory whose hosts.toml starts with it is tagger's,
// any other directory is the user's. A user directory is moved, unchanged, to
// _backup/<name> the first time tagger configures that registry; its
// configuration is kept after the mirror (its server too, when it named one),
// with relative ca/client paths made absolute into the backup because
// containerd resolves them against the hosts.toml's directory. A directory
// without hosts.toml (Docker-style *.crt/*.cert/*.key files) or with one
// containerd cannot parse is kept as the certificate files containerd then
// uses. A registry without a directory of its own inherits _default's
// configuration the same way; _default itself is never moved. When a registry
// leaves the set, or on Cleanup, tagger's directory is removed and the backup
// renamed back, so the user's files return byte for byte with their modes.
//
// # Crash safety
//
// Every change is a rename: a file is replaced by writing a temporary file in
// the same directory, fsyncing it and renaming it over the old one; a
// registry directory is built complete under a temporary name and renamed
// into place; directories move to and from _backup by rename; every rename is
// followed by an fsync of the directories involved. So containerd, which may
// read at any moment, sees a whole old or a whole new file, and after a crash
// the disk holds one of few states, each of which the next Sync completes or
// Cleanup undoes: temporaries (names starting with ".tagger-") are deleted;
// a backup without tagger's directory gets its directory (Sync) or is
// restored (Cleanup); a directory of tagger's without a backup is simply
// removed on Cleanup. Sync compares before writing, so a steady state writes
// nothing.
package hoststoml
