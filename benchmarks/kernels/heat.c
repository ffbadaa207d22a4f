#include <stdlib.h>
#include <string.h>
/* 2-D heat equation, explicit 5-point stencil with fixed (zero) boundary, on
 * an m x m grid for nsteps steps; returns the squared norm of the final field. */
double heat_norm(const double *u0, long m, long nsteps, double nu) {
    double *a = (double *)malloc(m * m * sizeof(double));
    double *b = (double *)malloc(m * m * sizeof(double));
    memcpy(a, u0, m * m * sizeof(double));
    for (long s = 0; s < nsteps; s++) {
        for (long i = 0; i < m; i++)
            for (long j = 0; j < m; j++) {
                double c = a[i * m + j];
                double up = i > 0 ? a[(i - 1) * m + j] : 0.0;
                double dn = i < m - 1 ? a[(i + 1) * m + j] : 0.0;
                double lf = j > 0 ? a[i * m + j - 1] : 0.0;
                double rt = j < m - 1 ? a[i * m + j + 1] : 0.0;
                b[i * m + j] = c + nu * (up + dn + lf + rt - 4.0 * c);
            }
        double *t = a; a = b; b = t;
    }
    double norm = 0.0;
    for (long i = 0; i < m * m; i++) norm += a[i] * a[i];
    free(a);
    free(b);
    return norm;
}
