// stats.cu: activation-variance reduction (docs/ARITHMETIC.md §5).
//
// One thread per channel runs Welford's update over the batch's tokens in
// ascending order, in binary64; consecutive threads read consecutive
// channels of a token, so the loads coalesce. The kernel produces the
// statistics of one batch; batches are merged with Chan's update in the
// written order (quant.Stats.Merge), which is what makes the reduction
// streaming and mergeable across batches, files and devices.

#include "mixq.cuh"

MIXQ_KERNEL mixq_channel_welford(const float *x, long long tokens, long long C, double *mean,
                                 double *m2) {
  for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < C;
       c += (long long)gridDim.x * blockDim.x) {
    double mu = 0.0, s2 = 0.0;
    for (long long t = 0; t < tokens; t++) {
      double xf = (double)LDG(x + t * C + c);  // exact
      double d = d_sub(xf, mu);
      mu = d_add(mu, d_div(d, (double)(t + 1)));
      s2 = d_add(s2, d_mul(d, d_sub(xf, mu)));  // with the updated mean
    }
    mean[c] = mu;
    m2[c] = s2;
  }
}
