/*
 * enzyme._fastcall: the argument checks and the call of a generated
 * derivative entry point, in C, for the common case.
 *
 * Python (enzyme/call.py) owns all policy: it builds a Plan from the call
 * plan it already has and keeps its own checks as the reference. The Plan
 * checks exactly what the Python path checks (numpy array of the exact
 * element type, C-contiguous, writeable where written, shadows shaped like
 * and disjoint from their primals, no written buffer overlapping any other,
 * Python int/float scalars in range), packs the arguments into the slots of
 * the generated "packed" entry point
 * (void entry(void **slots)), releases the GIL and calls it. Whenever an
 * argument is anything but the plain case, it returns NotImplemented before
 * any native code runs, and the Python path takes over to accept it or to
 * raise the precise EnzymeError. Nothing here raises for a user's mistake.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stddef.h>
#include <string.h>

#define MAX_SLOTS 256

enum { ARG_ARRAY = 0, ARG_FLOAT = 1, ARG_INT = 2 };
enum { VAL_F64 = 0, VAL_F32 = 1, VAL_I8 = 2, VAL_I16 = 3, VAL_I32 = 4, VAL_I64 = 5 };

typedef union {
    double f64;
    float f32;
    signed char i8;
    short i16;
    int i32;
    long long i64;
} Cell;

typedef struct {
    int kind;            /* ARG_* */
    int value;           /* VAL_* for scalars */
    char formats[8];     /* accepted buffer format characters, for arrays */
    Py_ssize_t itemsize; /* for arrays */
    int writable;        /* for arrays */
    long long min, max;  /* for integers */
} ArgSpec;

/* Gate: the calls in flight into one loaded library. Every call enters it
 * before native code runs and leaves it after, with the GIL held both times,
 * so the counts need no atomics. Closing it refuses new calls; the library's
 * unload (the on_idle callable) runs when the last call in flight leaves, so
 * no thread ever returns into unmapped code. */
typedef struct {
    PyObject_HEAD
    Py_ssize_t inflight;
    int closed;
    int pinned;         /* native callers outside the gate (XLA): never unload */
    PyObject *on_idle;  /* called once, when closed and idle */
} Gate;

static void gate_dealloc(Gate *self) {
    Py_XDECREF(self->on_idle);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static void gate_run_idle(Gate *self) {
    PyObject *on_idle = self->on_idle;
    if (on_idle == NULL || !self->closed || self->inflight != 0 || self->pinned) return;
    self->on_idle = NULL;
    PyObject *r = PyObject_CallNoArgs(on_idle);
    if (r == NULL) PyErr_WriteUnraisable(on_idle);
    Py_XDECREF(r);
    Py_DECREF(on_idle);
}

static inline int gate_enter(Gate *self) {
    if (self->closed) return 0;
    self->inflight++;
    return 1;
}

static inline void gate_leave(Gate *self) {
    self->inflight--;
    if (self->closed && self->inflight == 0) gate_run_idle(self);
}

static PyObject *gate_py_enter(Gate *self, PyObject *unused) {
    (void)unused;
    return PyBool_FromLong(gate_enter(self));
}

static PyObject *gate_py_leave(Gate *self, PyObject *unused) {
    (void)unused;
    if (self->inflight <= 0) {
        PyErr_SetString(PyExc_RuntimeError, "Gate.leave() without enter()");
        return NULL;
    }
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);  /* leave() runs in finally blocks */
    gate_leave(self);
    PyErr_Restore(exc_type, exc_value, exc_tb);
    Py_RETURN_NONE;
}

static PyObject *gate_py_close(Gate *self, PyObject *on_idle) {
    if (self->closed) Py_RETURN_FALSE;
    self->closed = 1;
    if (on_idle != Py_None) {
        Py_INCREF(on_idle);
        Py_XSETREF(self->on_idle, on_idle);
    }
    gate_run_idle(self);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_TRUE;
}

/* Callers that cannot enter the gate (an XLA custom call runs without the
 * GIL, at any time after the Python call that compiled it) read the closed
 * flag at this address before each call instead; a pinned gate never runs
 * on_idle, so code such a caller may still jump to stays mapped. */
static PyObject *gate_py_pin(Gate *self, PyObject *unused) {
    (void)unused;
    self->pinned = 1;
    return PyLong_FromVoidPtr(&self->closed);
}

static PyObject *gate_get_inflight(Gate *self, void *unused) {
    (void)unused;
    return PyLong_FromSsize_t(self->inflight);
}

static PyObject *gate_get_closed(Gate *self, void *unused) {
    (void)unused;
    return PyBool_FromLong(self->closed);
}

static PyMethodDef gate_methods[] = {
    {"enter", (PyCFunction)gate_py_enter, METH_NOARGS,
     "Count a call in; False (and nothing counted) when the gate is closed."},
    {"leave", (PyCFunction)gate_py_leave, METH_NOARGS,
     "Count a call out; runs on_idle if it was the last one after close()."},
    {"close", (PyCFunction)gate_py_close, METH_O,
     "Refuse new calls; call on_idle (or None) once no call is in flight."},
    {"pin", (PyCFunction)gate_py_pin, METH_NOARGS,
     "Never unload; return the address of the closed flag (an int) for native callers."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef gate_getset[] = {
    {"inflight", (getter)gate_get_inflight, NULL, "Calls in flight.", NULL},
    {"closed", (getter)gate_get_closed, NULL, "Whether new calls are refused.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject GateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "enzyme._fastcall.Gate",
    .tp_doc = "Calls in flight into one loaded library; unload only when none is.",
    .tp_basicsize = sizeof(Gate),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)gate_dealloc,
    .tp_methods = gate_methods,
    .tp_getset = gate_getset,
};

typedef struct {
    PyObject_HEAD
    void (*entry)(void **);
    PyTypeObject *ndarray;
    Gate *gate;
    int nargs;
    ArgSpec args[MAX_SLOTS];
    int npairs;
    int pairs[MAX_SLOTS][2];
    int nseeds;
    int seed_value;      /* VAL_F64 or VAL_F32 */
    int nouts;
    int out_values[MAX_SLOTS];
} Plan;

static void plan_dealloc(Plan *self) {
    Py_XDECREF(self->ndarray);
    Py_XDECREF(self->gate);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int format_ok(const ArgSpec *spec, const char *format) {
    if (format == NULL) return 0;
    /* numpy writes native-order simple types as one character, sometimes
       prefixed by '@', '=' or (on little-endian machines) '<'. */
    if (format[0] == '@' || format[0] == '=') format++;
#if PY_LITTLE_ENDIAN
    if (format[0] == '<') format++;
#endif
    if (format[0] == '\0' || format[1] != '\0') return 0;
    return strchr(spec->formats, format[0]) != NULL;
}

static int set_scalar(const ArgSpec *spec, PyObject *obj, Cell *cell) {
    if (spec->kind == ARG_FLOAT) {
        double v;
        if (PyFloat_CheckExact(obj)) v = PyFloat_AS_DOUBLE(obj);
        else if (PyLong_CheckExact(obj)) {
            v = PyLong_AsDouble(obj);
            if (v == -1.0 && PyErr_Occurred()) { PyErr_Clear(); return 0; }
        } else return 0;
        if (spec->value == VAL_F32) cell->f32 = (float)v; else cell->f64 = v;
        return 1;
    }
    if (!PyLong_CheckExact(obj)) return 0;  /* bool and numpy ints: the Python path */
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) { PyErr_Clear(); return 0; }
    if (v < spec->min || v > spec->max) return 0;
    switch (spec->value) {
    case VAL_I8: cell->i8 = (signed char)v; break;
    case VAL_I16: cell->i16 = (short)v; break;
    case VAL_I32: cell->i32 = (int)v; break;
    default: cell->i64 = v; break;
    }
    return 1;
}

static PyObject *plan_call(Plan *self, PyObject *const *argv, Py_ssize_t argc) {
    /* argv: the flat arguments, then the seed (or None) */
    if (argc != self->nargs + 1) Py_RETURN_NOTIMPLEMENTED;
    Py_buffer views[MAX_SLOTS];
    int held[MAX_SLOTS];
    void *slots[MAX_SLOTS];
    Cell cells[MAX_SLOTS];
    int nslots = 0, ok = 1, i;
    memset(held, 0, sizeof(int) * self->nargs);
    for (i = 0; i < self->nargs && ok; i++) {
        const ArgSpec *spec = &self->args[i];
        PyObject *obj = argv[i];
        if (spec->kind == ARG_ARRAY) {
            if (!PyObject_TypeCheck(obj, self->ndarray)) { ok = 0; break; }
            int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (spec->writable ? PyBUF_WRITABLE : 0);
            if (PyObject_GetBuffer(obj, &views[i], flags) != 0) { PyErr_Clear(); ok = 0; break; }
            held[i] = 1;
            if (views[i].itemsize != spec->itemsize || !format_ok(spec, views[i].format)) {
                ok = 0;
                break;
            }
            slots[nslots++] = views[i].buf;
        } else {
            if (!set_scalar(spec, obj, &cells[nslots])) { ok = 0; break; }
            slots[nslots] = &cells[nslots];
            nslots++;
        }
    }
    for (int p = 0; ok && p < self->npairs; p++) {
        Py_buffer *a = &views[self->pairs[p][0]], *b = &views[self->pairs[p][1]];
        if (a->ndim != b->ndim) { ok = 0; break; }
        for (int d = 0; d < a->ndim; d++)
            if (a->shape[d] != b->shape[d]) { ok = 0; break; }
        const char *a0 = a->buf, *b0 = b->buf;
        if (a->len && b->len && a0 < b0 + b->len && b0 < a0 + a->len) ok = 0;
    }
    /* No buffer the derivative writes may overlap any other buffer of the
       call (Enzyme assumes they do not alias); read-only ones may share. */
    for (i = 0; ok && i < self->nargs; i++) {
        if (!held[i] || views[i].len == 0) continue;
        for (int j = i + 1; ok && j < self->nargs; j++) {
            if (!held[j] || views[j].len == 0) continue;
            if (!self->args[i].writable && !self->args[j].writable) continue;
            const char *a0 = views[i].buf, *b0 = views[j].buf;
            if (a0 < b0 + views[j].len && b0 < a0 + views[i].len) ok = 0;
        }
    }
    if (ok && self->nseeds) {
        PyObject *seed = argv[self->nargs];
        double v = 1.0;
        if (seed != Py_None) {
            if (PyFloat_CheckExact(seed)) v = PyFloat_AS_DOUBLE(seed);
            else ok = 0;
        }
        for (int s = 0; ok && s < self->nseeds; s++) {
            if (self->seed_value == VAL_F32) cells[nslots].f32 = (float)v; else cells[nslots].f64 = v;
            slots[nslots] = &cells[nslots];
            nslots++;
        }
    } else if (ok && argv[self->nargs] != Py_None) {
        ok = 0;  /* a seed without an Active return: the Python path explains */
    }
    int first_out = nslots;
    for (int o = 0; ok && o < self->nouts; o++) {
        cells[nslots].i64 = 0;
        slots[nslots] = &cells[nslots];
        nslots++;
    }
    /* A closed gate: the library is being unloaded; the Python path says so. */
    if (ok && !gate_enter(self->gate)) ok = 0;
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        self->entry(slots);
        Py_END_ALLOW_THREADS
        gate_leave(self->gate);
    }
    for (i = 0; i < self->nargs; i++)
        if (held[i]) PyBuffer_Release(&views[i]);
    if (!ok) Py_RETURN_NOTIMPLEMENTED;
    PyObject *outs = PyTuple_New(self->nouts);
    if (outs == NULL) return NULL;
    for (int o = 0; o < self->nouts; o++) {
        Cell *c = &cells[first_out + o];
        double v = self->out_values[o] == VAL_F32 ? (double)c->f32 : c->f64;
        PyObject *item = PyFloat_FromDouble(v);
        if (item == NULL) { Py_DECREF(outs); return NULL; }
        PyTuple_SET_ITEM(outs, o, item);
    }
    return outs;
}

static PyObject *plan_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                 PyObject *kwnames) {
    if (kwnames && PyTuple_GET_SIZE(kwnames)) Py_RETURN_NOTIMPLEMENTED;
    return plan_call((Plan *)self, args, PyVectorcall_NARGS(nargsf));
}

static PyObject *plan_tp_call(PyObject *self, PyObject *args, PyObject *kwargs) {
    if (kwargs && PyDict_GET_SIZE(kwargs)) Py_RETURN_NOTIMPLEMENTED;
    return plan_call((Plan *)self, &PyTuple_GET_ITEM(args, 0), PyTuple_GET_SIZE(args));
}

/* Plan(address, gate, ndarray_type, args, pairs, nseeds, seed_value, out_values)
 *   args: tuple of (kind, value, formats, itemsize, writable, min, max)
 *   pairs: tuple of (primal_index, shadow_index) into args */
static PyObject *plan_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    (void)kwargs;
    unsigned long long address;
    PyObject *gate, *ndarray, *specs, *pairs, *outs;
    int nseeds, seed_value;
    if (!PyArg_ParseTuple(args, "KO!O!O!O!iiO!", &address, &GateType, &gate, &PyType_Type, &ndarray,
                          &PyTuple_Type,
                          &specs, &PyTuple_Type, &pairs, &nseeds, &seed_value, &PyTuple_Type,
                          &outs))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(specs);
    if (n + nseeds + PyTuple_GET_SIZE(outs) > MAX_SLOTS || PyTuple_GET_SIZE(pairs) > MAX_SLOTS) {
        PyErr_SetString(PyExc_ValueError, "too many arguments for the fast path");
        return NULL;
    }
    Plan *self = (Plan *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->entry = (void (*)(void **))(uintptr_t)address;
    Py_INCREF(ndarray);
    self->ndarray = (PyTypeObject *)ndarray;
    Py_INCREF(gate);
    self->gate = (Gate *)gate;
    self->nargs = (int)n;
    for (Py_ssize_t i = 0; i < n; i++) {
        ArgSpec *spec = &self->args[i];
        const char *formats;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(specs, i), "iisniLL", &spec->kind, &spec->value,
                              &formats, &spec->itemsize, &spec->writable, &spec->min, &spec->max)) {
            Py_DECREF(self);
            return NULL;
        }
        strncpy(spec->formats, formats, sizeof(spec->formats) - 1);
    }
    self->npairs = (int)PyTuple_GET_SIZE(pairs);
    for (int p = 0; p < self->npairs; p++) {
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(pairs, p), "ii", &self->pairs[p][0],
                              &self->pairs[p][1])) {
            Py_DECREF(self);
            return NULL;
        }
    }
    self->nseeds = nseeds;
    self->seed_value = seed_value;
    self->nouts = (int)PyTuple_GET_SIZE(outs);
    for (int o = 0; o < self->nouts; o++)
        self->out_values[o] = (int)PyLong_AsLong(PyTuple_GET_ITEM(outs, o));
    if (PyErr_Occurred()) { Py_DECREF(self); return NULL; }
    *(vectorcallfunc *)((char *)self + type->tp_vectorcall_offset) = plan_vectorcall;
    return (PyObject *)self;
}

typedef struct {
    Plan plan;
    vectorcallfunc vectorcall;
} PlanWithVectorcall;

static PyTypeObject PlanType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "enzyme._fastcall.Plan",
    .tp_doc = "A checked, packed call of one generated derivative entry point.",
    .tp_basicsize = sizeof(PlanWithVectorcall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = plan_new,
    .tp_dealloc = (destructor)plan_dealloc,
    .tp_call = plan_tp_call,
    .tp_vectorcall_offset = offsetof(PlanWithVectorcall, vectorcall),
};

/* tune_malloc(mmap_threshold, trim_threshold) -> bool
 * Enzyme's generated code mallocs its tape on every reverse call and frees it
 * after; with glibc's default thresholds a large tape is mmap'ed and unmapped
 * each time, and every call pays the page faults (measured: the Gaussian
 * mixture gradient takes twice as long). Keeping such blocks in the heap
 * removes that cost. Returns False where this is not glibc. */
static PyObject *tune_malloc(PyObject *self, PyObject *args) {
    (void)self;
    int mmap_threshold, trim_threshold;
    if (!PyArg_ParseTuple(args, "ii", &mmap_threshold, &trim_threshold)) return NULL;
#ifdef __GLIBC__
    int ok = mallopt(M_MMAP_THRESHOLD, mmap_threshold) && mallopt(M_TRIM_THRESHOLD, trim_threshold);
    return PyBool_FromLong(ok);
#else
    (void)mmap_threshold;
    (void)trim_threshold;
    Py_RETURN_FALSE;
#endif
}

/* run_batch(address, gate, bases, strides, zero, start, stop, workers)
 * Calls the batch twin of a generated entry point at ``address`` (``void
 * f(char *const *bases, const long long *strides, const long long *zero,
 * long long lo, long long hi)``, which calls the entry for each i in [lo, hi)
 * with slot k at bases[k] + i * strides[k], a stride of 0 meaning the same
 * memory, or a value such as a function pointer, for every element; and
 * first zeroes zero[k] bytes there for the written slots with zero[k] > 0)
 * for [start, stop), without the GIL, split over ``workers`` threads in
 * contiguous chunks. The Python side (enzyme/vmap.py) has checked every
 * buffer and the first element already. */
typedef void (*batch_fn)(char *const *, const long long *, const long long *, long long, long long);

typedef struct {
    batch_fn batch;
    int nslots;
    char *const *bases;
    const long long *strides, *zero;
    long long start, stop;
} BatchChunk;

/* Rows up to this many bytes, one after another, are zeroed for the whole
   chunk at once before the loop: a memset call per small row costs more than
   the pass over memory it saves. Larger rows are zeroed by the batch twin just
   before each call, while they are in cache. */
#define BULK_ZERO_ROW 1024

static void *run_chunk(void *arg) {
    const BatchChunk *c = (const BatchChunk *)arg;
    long long zero[MAX_SLOTS];
    for (int k = 0; k < c->nslots; k++) {
        zero[k] = c->zero[k];
        if (zero[k] > 0 && zero[k] == c->strides[k] && zero[k] <= BULK_ZERO_ROW) {
            memset(c->bases[k] + c->start * c->strides[k], 0, (size_t)((c->stop - c->start) * zero[k]));
            zero[k] = 0;
        }
    }
    c->batch(c->bases, c->strides, zero, c->start, c->stop);
    return NULL;
}

#define MAX_WORKERS 256

static PyObject *run_batch(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long address;
    PyObject *gate, *bases_obj, *strides_obj, *zero_obj;
    long long start, stop;
    int workers;
    if (!PyArg_ParseTuple(args, "KO!O!O!O!LLi", &address, &GateType, &gate, &PyTuple_Type, &bases_obj,
                          &PyTuple_Type, &strides_obj, &PyTuple_Type, &zero_obj, &start, &stop, &workers))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(bases_obj);
    if (address == 0 || n > MAX_SLOTS || PyTuple_GET_SIZE(strides_obj) != n ||
        PyTuple_GET_SIZE(zero_obj) != n || workers < 1 || workers > MAX_WORKERS) {
        PyErr_SetString(PyExc_ValueError, "run_batch: no batch entry, or bad slot or worker count");
        return NULL;
    }
    /* A base is an address (an int) or an object exporting a C-contiguous
       buffer (a numpy array), whose memory is held for the call. */
    char *bases[MAX_SLOTS];
    long long strides[MAX_SLOTS], zero[MAX_SLOTS];
    Py_buffer views[MAX_SLOTS];
    int held[MAX_SLOTS];
    int ok = 1;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *base = PyTuple_GET_ITEM(bases_obj, k);
        held[k] = 0;
        if (ok && PyLong_Check(base)) {
            bases[k] = (char *)(uintptr_t)PyLong_AsUnsignedLongLong(base);
        } else if (ok && PyObject_GetBuffer(base, &views[k], PyBUF_C_CONTIGUOUS) == 0) {
            held[k] = 1;
            bases[k] = (char *)views[k].buf;
        } else {
            ok = 0;
        }
        strides[k] = PyLong_AsLongLong(PyTuple_GET_ITEM(strides_obj, k));
        zero[k] = PyLong_AsLongLong(PyTuple_GET_ITEM(zero_obj, k));
    }
    if (!ok || PyErr_Occurred() || stop <= start || !gate_enter((Gate *)gate)) {
        for (Py_ssize_t k = 0; k < n; k++)
            if (held[k]) PyBuffer_Release(&views[k]);
        if (!ok || PyErr_Occurred()) return NULL;
        if (stop <= start) Py_RETURN_TRUE;
        Py_RETURN_FALSE;  /* closed: the caller says so */
    }
    batch_fn batch = (batch_fn)(uintptr_t)address;
    long long count = stop - start;
    if (workers > count) workers = (int)count;
    BatchChunk chunks[MAX_WORKERS];
    pthread_t threads[MAX_WORKERS];
    int started[MAX_WORKERS];
    Py_BEGIN_ALLOW_THREADS
    for (int w = 0; w < workers; w++) {
        chunks[w] = (BatchChunk){batch, (int)n, bases, strides, zero, start + count * w / workers,
                                 start + count * (w + 1) / workers};
        started[w] = w > 0 && pthread_create(&threads[w], NULL, run_chunk, &chunks[w]) == 0;
        if (w > 0 && !started[w]) run_chunk(&chunks[w]);  /* no thread: run it here */
    }
    run_chunk(&chunks[0]);
    for (int w = 1; w < workers; w++)
        if (started[w]) pthread_join(threads[w], NULL);
    Py_END_ALLOW_THREADS
    gate_leave((Gate *)gate);
    for (Py_ssize_t k = 0; k < n; k++)
        if (held[k]) PyBuffer_Release(&views[k]);
    Py_RETURN_TRUE;
}

static PyMethodDef module_methods[] = {
    {"tune_malloc", tune_malloc, METH_VARARGS, "Keep blocks up to the threshold in the heap (glibc)."},
    {"run_batch", run_batch, METH_VARARGS, "Call a packed entry point once per batch element."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastcall",
    "Checked calls of generated derivative entry points (see enzyme/call.py).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__fastcall(void) {
    if (PyType_Ready(&PlanType) < 0 || PyType_Ready(&GateType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&PlanType);
    if (PyModule_AddObject(m, "Plan", (PyObject *)&PlanType) < 0) {
        Py_DECREF(&PlanType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&GateType);
    if (PyModule_AddObject(m, "Gate", (PyObject *)&GateType) < 0) {
        Py_DECREF(&GateType);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "MAX_SLOTS", MAX_SLOTS);
    return m;
}
