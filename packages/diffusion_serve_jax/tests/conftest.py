"""Ray pickles the zoo's model functions by value, and jaxtyping's wrapper around each (the
test-time shape checks) holds a weak reference to itself, which plain pickle refuses; the reducer
below pickles that reference as a reference to the (pickled) wrapper, so the checked functions
travel to Ray workers."""

import copyreg
import weakref


def _reduce_weakref(ref):
    return weakref.ref, (ref(),)


copyreg.pickle(weakref.ReferenceType, _reduce_weakref)
