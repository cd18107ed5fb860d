// Under `make test-tsan` (-DWALD_TSAN) this module's Mutex is one TSan can see; see WALSync.
#if WALD_TSAN
import WALSync

typealias Mutex = TSanVisibleMutex
#endif
