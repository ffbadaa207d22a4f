/* Extended Rosenbrock function. */
double rosenbrock(const double *x, long n) {
    double s = 0.0;
    for (long i = 0; i < n - 1; i++) {
        double a = x[i + 1] - x[i] * x[i];
        double b = 1.0 - x[i];
        s += 100.0 * a * a + b * b;
    }
    return s;
}
