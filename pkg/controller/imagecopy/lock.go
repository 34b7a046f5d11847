package imagecopy

import "sync"

// repoLocks keeps Prune and Copy of one cache repository apart: copies
// share a repository, a prune has it to itself. A copy may rely on a
// manifest it found present (HEAD) that a concurrent prune, whose keep list
// did not have the copied root yet, could delete; holding the lock while
// the keep list is read and the deletes run closes that window.
type repoLocks struct {
	mu sync.Mutex
	m  map[string]*repoLock
}

type repoLock struct {
	sync.RWMutex
	refs int // holders and waiters; the entry goes when it drops to 0
}

func (l *repoLocks) acquire(repo string) *repoLock {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]*repoLock{}
	}
	lk := l.m[repo]
	if lk == nil {
		lk = &repoLock{}
		l.m[repo] = lk
	}
	lk.refs++
	return lk
}

func (l *repoLocks) release(repo string, lk *repoLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lk.refs--; lk.refs == 0 {
		delete(l.m, repo)
	}
}

// shared runs f while no prune of repo runs.
func (l *repoLocks) shared(repo string, f func()) {
	lk := l.acquire(repo)
	defer l.release(repo, lk)
	lk.RLock()
	defer lk.RUnlock()
	f()
}

// exclusive runs f while no copy into, or prune of, repo runs.
func (l *repoLocks) exclusive(repo string, f func()) {
	lk := l.acquire(repo)
	defer l.release(repo, lk)
	lk.Lock()
	defer lk.Unlock()
	f()
}

// holders is how many copies and prunes hold or wait for repo (tests).
func (l *repoLocks) holders(repo string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lk := l.m[repo]; lk != nil {
		return lk.refs
	}
	return 0
}
