// Vector primitives and the register-blocked GEMM of the CPU contrastive kernels (info_nce_gemm.h,
// sup_con_gemm.h), written with GCC vector extensions. No include guard on purpose: each of those
// headers includes this file inside its own per-instruction-set namespace, after the includer's
// `#pragma GCC target(...)`, so that the 64-byte vector types are laid out for that target.
// Needs, from the enclosing namespace: kR (rows of the GEMM micro-kernel).

template <class T>
struct Simd;
template <>
struct Simd<float> {
  typedef float V __attribute__((vector_size(64)));
  typedef int32_t I __attribute__((vector_size(64)));
  static constexpr int W = 16;
};
template <>
struct Simd<double> {
  typedef double V __attribute__((vector_size(64)));
  typedef int64_t I __attribute__((vector_size(64)));
  static constexpr int W = 8;
};

template <class T>
using Vec = typename Simd<T>::V;

template <class T>
inline Vec<T> vload(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <class T>
inline void vstore(T* p, Vec<T> v) {
  std::memcpy(p, &v, sizeof(v));
}
// Brace fills compile to one broadcast (`Vec{} + x` would cost a scalar add: −0.0 rules).
inline Vec<float> vbroadcast(float x) { return Vec<float>{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }
inline Vec<double> vbroadcast(double x) { return Vec<double>{x, x, x, x, x, x, x, x}; }
template <class T>
inline Vec<T> vmax(Vec<T> a, Vec<T> b) {
  return a > b ? a : b;
}
template <class T>
inline T hmax(Vec<T> v) {
  T m = v[0];
  for (int l = 1; l < Simd<T>::W; ++l) m = v[l] > m ? v[l] : m;
  return m;
}
template <class T>
inline T hsum(Vec<T> v) {
  T s = 0;
  for (int l = 0; l < Simd<T>::W; ++l) s += v[l];
  return s;
}

// exp on a vector of x ≤ ~0 (arguments are always x − max or L − lse). float: Cephes-style
// range reduction + degree-7 polynomial (≤ 2 ulp), exactly 0 below the smallest normal; double:
// per-lane std::exp (the double path is for validation, not speed).
inline Vec<float> vexp(Vec<float> x) {
  using V = Vec<float>;
  using I = Simd<float>::I;
  const V lo = vbroadcast(-87.33654475f);
  const V xc = x < lo ? lo : (x > vbroadcast(80.0f) ? vbroadcast(80.0f) : x);
  const V magic = vbroadcast(12582912.0f);  // 1.5·2^23: adding it rounds to nearest
  const V t = xc * 1.44269504088896341f + magic;
  const V n = t - magic;
  V r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V p = vbroadcast(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const I bits = (__builtin_convertvector(n, I) + 127) << 23;
  const V scale = (V)bits;
  const V y = p * scale;
  return x < lo ? V{} : y;
}
inline Vec<double> vexp(Vec<double> x) {
  Vec<double> y;
  for (int l = 0; l < Simd<double>::W; ++l) y[l] = std::exp(x[l]);
  return y;
}

// C[rows, ncols] (+)= X · Y with X[r, k] = X[r·xr + k·xk], Y[k, c] = Y[k·ldy + c] (c contiguous).
// rows is a multiple of kR and ncols of W; R × NV vector accumulators stay in registers.
template <class T, int NV, bool ACC>
inline void micro(const T* X, int64_t xr, int64_t xk, const T* Y, int64_t ldy, T* C, int64_t ldc, int64_t K) {
  constexpr int W = Simd<T>::W;
  Vec<T> acc[kR][NV];
  for (int r = 0; r < kR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = ACC ? vload(C + r * ldc + v * W) : Vec<T>{};
  for (int64_t k = 0; k < K; ++k) {
    Vec<T> y[NV];
    for (int v = 0; v < NV; ++v) y[v] = vload(Y + k * ldy + v * W);
    const T* xcol = X + k * xk;
    for (int r = 0; r < kR; ++r) {
      const Vec<T> xb = vbroadcast(xcol[r * xr]);
      for (int v = 0; v < NV; ++v) acc[r][v] += xb * y[v];
    }
  }
  for (int r = 0; r < kR; ++r)
    for (int v = 0; v < NV; ++v) vstore(C + r * ldc + v * W, acc[r][v]);
}

template <class T, bool ACC>
inline void gemm(const T* X, int64_t xr, int64_t xk, const T* Y, int64_t ldy, T* C, int64_t ldc, int64_t rows,
                 int64_t K, int64_t ncols) {
  constexpr int W = Simd<T>::W;
  int64_t c = 0;
  for (; c + 2 * W <= ncols; c += 2 * W)
    for (int64_t r = 0; r < rows; r += kR)
      micro<T, 2, ACC>(X + r * xr, xr, xk, Y + c, ldy, C + r * ldc + c, ldc, K);
  for (; c < ncols; c += W)
    for (int64_t r = 0; r < rows; r += kR)
      micro<T, 1, ACC>(X + r * xr, xr, xk, Y + c, ldy, C + r * ldc + c, ldc, K);
}
