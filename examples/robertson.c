/* Robertson's chemical kinetics: three species, rate constants spanning
   nine orders of magnitude, the classic stiff test problem. Written the way
   legacy simulation codes are: the time, the state, an output pointer for
   the derivative and a parameter array. */
void robertson(double t, const double *y, double *dydt, const double *k)
{
    double r1 = k[0] * y[0];
    double r2 = k[1] * y[1] * y[1];
    double r3 = k[2] * y[1] * y[2];
    (void)t;
    dydt[0] = -r1 + r3;
    dydt[1] = r1 - r2 - r3;
    dydt[2] = r2;
}
