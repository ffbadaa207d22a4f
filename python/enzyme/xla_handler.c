/* The XLA FFI handler of enzyme.jax: one custom-call target that runs any
 * generated entry point taking ``void **slots`` (a derivative's packed twin,
 * or a kernel's primal shim), with the slots filled from XLA's buffers as a
 * plan made in Python says (enzyme/xla.py, which compiles this file against
 * the XLA FFI C header of the installed jaxlib).
 *
 * No Python and no GIL on the call path. The first call of each plan goes to
 * Python instead (``python`` below): it runs the same computation through
 * the checked reference path, so a derivative's first-use check sees real
 * values, and marks the plan checked when that succeeded. */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xla/ffi/api/c_api.h"

enum {
    SLOT_ARG = 0,         /* an operand's memory (read only) */
    SLOT_ARG_COPY = 1,    /* a private copy of an operand (the entry writes it) */
    SLOT_RET = 2,         /* a result's memory, zeroed first */
    SLOT_FIXED = 3,       /* a pointer held by the plan (static inputs) */
    SLOT_SCRATCH_ARG = 4, /* zeroed memory the size of an operand */
    SLOT_SCRATCH_RET = 5, /* zeroed memory the size of a result */
    SLOT_SCRATCH = 6,     /* zeroed memory of ``index`` bytes */
};

#define MAX_BUFFERS 64
#define MESSAGE_SIZE 4096
#define MAX_PLANS 65536

typedef int (*first_call_fn)(int64_t plan, void **args, void **rets, char *message, int64_t size);

/* Laid out as enzyme/xla.py's ctypes Structure of the same name. */
typedef struct {
    void (*entry)(void **);
    const volatile int *closed; /* the library's gate: set when its module is closed */
    first_call_fn first_call;
    int64_t id;
    volatile int64_t checked;
    int64_t nslots;
    const int64_t *kind;
    const int64_t *index;
    void *const *fixed;
} EfiPlan;

/* The plans, by number: a custom call carries its plan's number, checked
 * against this table, never a raw address (a stray call of the target with a
 * made-up attribute gets an error, not a jump through a wild pointer).
 * Written only by efi_register_plan (under enzyme/xla.py's lock); a plan
 * stays for the life of the process. */
static EfiPlan *plans[MAX_PLANS];
static int64_t nplans;

int64_t efi_register_plan(EfiPlan *plan) {
    int64_t id = __atomic_load_n(&nplans, __ATOMIC_ACQUIRE);
    if (id >= MAX_PLANS) return -1;
    plans[id] = plan;
    __atomic_store_n(&nplans, id + 1, __ATOMIC_RELEASE);
    return id;
}

static XLA_FFI_Error *failure(const XLA_FFI_CallFrame *frame, XLA_FFI_Error_Code code, const char *message) {
    XLA_FFI_Error_Create_Args args;
    memset(&args, 0, sizeof args);
    args.struct_size = XLA_FFI_Error_Create_Args_STRUCT_SIZE;
    args.message = message;
    args.errc = code;
    return frame->api->XLA_FFI_Error_Create(&args);
}

static int64_t buffer_bytes(const XLA_FFI_Buffer *b) {
    int64_t n = 1;
    for (int64_t i = 0; i < b->rank; i++) n *= b->dims[i];
    switch (b->dtype) {
    case XLA_FFI_DataType_F64: case XLA_FFI_DataType_S64: case XLA_FFI_DataType_U64: return 8 * n;
    case XLA_FFI_DataType_F32: case XLA_FFI_DataType_S32: case XLA_FFI_DataType_U32: return 4 * n;
    default: return -1;
    }
}

static const EfiPlan *find_plan(const XLA_FFI_CallFrame *frame) {
    for (int64_t i = 0; i < frame->attrs.size; i++) {
        const XLA_FFI_ByteSpan *name = frame->attrs.names[i];
        if (frame->attrs.types[i] != XLA_FFI_AttrType_SCALAR || name->len != 4 ||
            memcmp(name->ptr, "plan", 4) != 0)
            continue;
        const XLA_FFI_Scalar *value = (const XLA_FFI_Scalar *)frame->attrs.attrs[i];
        if (value->dtype != XLA_FFI_DataType_S64) return NULL;
        int64_t id = *(const int64_t *)value->value;
        if (id < 0 || id >= __atomic_load_n(&nplans, __ATOMIC_ACQUIRE)) return NULL;
        return plans[id];
    }
    return NULL;
}

XLA_FFI_Error *efi_xla_call(XLA_FFI_CallFrame *frame) {
    /* XLA asks for the API version the handler was built with first */
    for (XLA_FFI_Extension_Base *ext = frame->extension_start; ext != NULL; ext = ext->next) {
        if (ext->type == XLA_FFI_Extension_Metadata) {
            XLA_FFI_Metadata *metadata = ((XLA_FFI_Metadata_Extension *)ext)->metadata;
            metadata->api_version.struct_size = XLA_FFI_Api_Version_STRUCT_SIZE;
            metadata->api_version.extension_start = NULL;
            metadata->api_version.major_version = XLA_FFI_API_MAJOR;
            metadata->api_version.minor_version = XLA_FFI_API_MINOR;
            metadata->traits = 0;
            metadata->state_type_id = (XLA_FFI_TypeId){0}; /* stateless */
            return NULL;
        }
    }
    if (frame->stage != XLA_FFI_ExecutionStage_EXECUTE) return NULL;
    EfiPlan *plan = (EfiPlan *)find_plan(frame);
    if (plan == NULL)
        return failure(frame, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                       "enzyme: a custom call without a known plan (enzyme_ffi_call is enzyme.jax's "
                       "internal target)");
    if (*plan->closed)
        return failure(frame, XLA_FFI_Error_Code_FAILED_PRECONDITION,
                       "enzyme: the module of this kernel was closed; compile it again and re-trace "
                       "the JAX function.");
    int64_t nargs = frame->args.size, nrets = frame->rets.size;
    if (nargs > MAX_BUFFERS || nrets > MAX_BUFFERS || plan->nslots > MAX_BUFFERS * 2)
        return failure(frame, XLA_FFI_Error_Code_INVALID_ARGUMENT, "enzyme: too many buffers");
    void *args[MAX_BUFFERS], *rets[MAX_BUFFERS];
    int64_t arg_bytes[MAX_BUFFERS], ret_bytes[MAX_BUFFERS];
    for (int64_t i = 0; i < nargs; i++) {
        const XLA_FFI_Buffer *b = (const XLA_FFI_Buffer *)frame->args.args[i];
        args[i] = b->data;
        arg_bytes[i] = buffer_bytes(b);
    }
    for (int64_t i = 0; i < nrets; i++) {
        const XLA_FFI_Buffer *b = (const XLA_FFI_Buffer *)frame->rets.rets[i];
        rets[i] = b->data;
        ret_bytes[i] = buffer_bytes(b);
        if (ret_bytes[i] < 0)
            return failure(frame, XLA_FFI_Error_Code_INVALID_ARGUMENT, "enzyme: a result of an unexpected type");
    }
    if (!__atomic_load_n(&plan->checked, __ATOMIC_ACQUIRE)) {
        char message[MESSAGE_SIZE];
        message[0] = 0;
        if (plan->first_call(plan->id, args, rets, message, MESSAGE_SIZE) != 0)
            return failure(frame, XLA_FFI_Error_Code_INTERNAL, message[0] ? message : "enzyme: the call failed");
        return NULL;
    }
    void *slots[MAX_BUFFERS * 2];
    void *owned[MAX_BUFFERS * 2];
    int64_t nowned = 0;
    XLA_FFI_Error *error = NULL;
    for (int64_t i = 0; i < nrets; i++) memset(rets[i], 0, (size_t)ret_bytes[i]);
    for (int64_t s = 0; s < plan->nslots && error == NULL; s++) {
        int64_t k = plan->index[s], bytes = -1;
        switch (plan->kind[s]) {
        case SLOT_ARG: slots[s] = args[k]; continue;
        case SLOT_RET: slots[s] = rets[k]; continue;
        case SLOT_FIXED: slots[s] = plan->fixed[s]; continue;
        case SLOT_ARG_COPY: case SLOT_SCRATCH_ARG: bytes = arg_bytes[k]; break;
        case SLOT_SCRATCH_RET: bytes = ret_bytes[k]; break;
        case SLOT_SCRATCH: bytes = k; break;
        }
        if (bytes < 0) {
            error = failure(frame, XLA_FFI_Error_Code_INVALID_ARGUMENT, "enzyme: a slot of an unexpected kind");
            break;
        }
        void *memory = calloc(1, bytes > 0 ? (size_t)bytes : 1);  /* (zeroed: scratch shadows) */
        if (memory == NULL) {
            error = failure(frame, XLA_FFI_Error_Code_RESOURCE_EXHAUSTED, "enzyme: out of memory");
            break;
        }
        if (plan->kind[s] == SLOT_ARG_COPY) memcpy(memory, args[k], (size_t)bytes);
        owned[nowned++] = slots[s] = memory;
    }
    if (error == NULL) plan->entry(slots);
    for (int64_t i = 0; i < nowned; i++) free(owned[i]);
    return error;
}
