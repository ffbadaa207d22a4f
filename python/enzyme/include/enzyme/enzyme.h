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

#ifdef __cplusplus
}
#endif

#endif /* ENZYME_FFI_ENZYME_H */
