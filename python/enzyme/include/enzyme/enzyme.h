/* enzyme-ffi: declarations of Enzyme's C entry points and activity markers.
 *
 * Include it as <enzyme/enzyme.h> (enzyme.get_include() is on the include
 * path of every enzyme.compile) to call Enzyme from your own C code:
 *
 *     double sq(double x) { return x * x; }
 *     double dsq(double x) { return __enzyme_autodiff((void *)sq, enzyme_out, x); }
 *
 * The prototypes below are variadic and return double, which suits scalar
 * derivatives of double functions. Float arguments passed through `...` are
 * promoted to double; for float kernels, or when Enzyme returns a struct of
 * several adjoints, declare your own typed prototype: Enzyme recognises any
 * function whose name contains __enzyme_autodiff / __enzyme_fwddiff, e.g.
 *
 *     typedef struct { double dx, dy; } grad2;
 *     grad2 __enzyme_autodiff_f2(double (*)(double, double), int, double, int, double);
 */
#ifndef ENZYME_FFI_ENZYME_H
#define ENZYME_FFI_ENZYME_H

#ifdef __cplusplus
extern "C" {
#endif

/* Activity markers: pass one before the argument it describes. Enzyme
 * recognises them by name, so only their declarations matter. */
extern int enzyme_const;          /* not differentiated, no shadow */
extern int enzyme_out;            /* active scalar (reverse): adjoint returned */
extern int enzyme_dup;            /* followed by the primal, then its shadow */
extern int enzyme_dupnoneed;      /* like enzyme_dup; primal result not needed */
extern int enzyme_width;          /* batch: followed by the width W */
extern int enzyme_primal_return;  /* forward: return {primal, tangent} */
extern int enzyme_const_return;
extern int enzyme_active_return;
extern int enzyme_dup_return;
extern int enzyme_noret;

/* Combined reverse mode and forward mode. */
extern double __enzyme_autodiff(void *, ...);
extern double __enzyme_fwddiff(void *, ...);

/* ---- Length contracts --------------------------------------------------
 * Tie a pointer parameter's length (in elements) to integer parameters, so
 * that enzyme-ffi checks every array and shadow before calling:
 *     double loss(const double *ENZYME_LEN(n) w, double *ENZYME_LEN(2 * n) out, int n);
 * The expression may use integer parameters, integer literals, + - * / and
 * parentheses; it is evaluated with C's integer rules (the parameters' types,
 * truncating division, unsigned wrap-around), and a negative, overflowing or
 * divide-by-zero length is an error. It has no effect on the compiled code. */
#define ENZYME_LEN(expr) __attribute__((annotate("enzyme_len:" #expr)))

/* ---- Custom derivatives and inactive code ------------------------------
 * Enzyme reads these registrations by their global's name (enzyme-ffi runs
 * Enzyme's preserve-nvvm pass before any inlining, so they are honoured and
 * the functions they name are kept out of line). Use each macro once per
 * function, at file scope, after the functions it names are declared.
 *
 * Forward rule for  R f(args...):  the rule takes each argument followed by
 * its tangent (pointer arguments: the primal pointer, then the shadow
 * pointer). For a void f it writes tangents through the shadow pointers; for
 * a scalar-returning f it returns a struct { R primal; R tangent; }.
 *
 * Reverse rule (use it for void functions with pointer arguments; Enzyme
 * v0.0.289 asserts on reverse rules for value-returning functions):
 *   void *aug(args with shadows...)       runs the primal, returns a tape (or NULL)
 *   void rev(args with shadows..., void *tape)
 *                                          adds adjoints into the input shadows
 *                                          and zeroes the output shadows it consumed.
 */
#define ENZYME_CUSTOM_DERIVATIVE(fn, fwd) \
    __attribute__((used)) void *__enzyme_register_derivative_##fn[2] = { (void *)(fn), (void *)(fwd) }
#define ENZYME_CUSTOM_GRADIENT(fn, aug, rev) \
    __attribute__((used)) void *__enzyme_register_gradient_##fn[3] = { \
        (void *)(fn), (void *)(aug), (void *)(rev) }
/* Calls to fn are not differentiated (logging, timers, RNG, I/O); fn may have
 * no visible body. */
#define ENZYME_INACTIVE_FUNCTION(fn) \
    __attribute__((used)) void *__enzyme_inactivefn_##fn = (void *)(fn)
/* The global var holds no derivative information (a constant table, a
 * counter, an RNG state). */
#define ENZYME_INACTIVE_GLOBAL(var) \
    __attribute__((used)) void *__enzyme_inactive_global_##var = (void *)&(var)
/* Differentiate fn as Enzyme differentiates the named libm function. */
#define ENZYME_FUNCTION_LIKE(fn, libm_name) \
    __attribute__((used)) void *__enzyme_function_like_##fn[2] = { (void *)(fn), (void *)(libm_name) }

#ifdef __cplusplus
}
#endif

#endif /* ENZYME_FFI_ENZYME_H */
