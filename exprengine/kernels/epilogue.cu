// exprengine's fused CUDA prologue and epilogue around the generator network.
//
//   prologue:  x[n,c,h,w] = frame[f(n),h,w,c] / 127.5 - 1     uint8 NHWC -> T NCHW  (T = fp32 | fp16)
//              a[n,k]     = intensity[n,k] / 5                 float32 [N,17] -> T [N,17]
//   epilogue:  out        = A * I0 + (1 - A) * C               C, A: the network's heads AFTER
//              pixel      = clamp(rint((out + 1) * 127.5))      tanh / sigmoid, T NCHW;
//              dst[n,h,w,c] = uint8(pixel)                      I0 from the uint8 frame itself
//
//   output:    pixel = clamp(rint((x + 1) * 127.5))          x: a network's tanh image (LATS's
//              dst[n,h,w,c] = uint8(pixel)                      decoder), T NCHW in [-1, 1]; no blend
//
// f(n) = n, or 0 when one frame is broadcast to every batch item (a morph: one face, N
// expressions; frame_stride = 0). The epilogue re-reads the uint8 frame rather than the
// network input, so I0 costs 3 bytes a pixel instead of 6 or 12, and recomputes
// I0 = u8 / 127.5 - 1 exactly as the prologue (and exprengine/pixels.py) does.
//
// Every multiply and add is an explicit _rn intrinsic: no FMA contraction, so for the
// same float32 inputs the results are bit-identical to the NumPy/PyTorch references
// (exprengine/pixels.py: blend_to_uint8_nhwc, to_network_input and to_uint8_nhwc). rint is
// round-half-to-even, as numpy.rint and torch.round.
//
// Layout and vectorisation: one thread handles 16 consecutive pixels of one image. On
// the vector path (H*W % 16 == 0 and 16-byte aligned pointers, the host decides) every
// global access is 16 bytes wide: 3 x uint4 for 16 RGB pixels in uint8, 4 (fp32) or 2
// (fp16) x uint4 per plane. Otherwise the same thread falls back to scalar accesses, so
// any batch size and any image size are handled by the same launch.
//
// The file includes no headers (fp16 conversions are one PTX instruction each), so it
// compiles unchanged with nvcc and with NVRTC (exprengine/kernels/cuda.py).

typedef unsigned char u8;
typedef unsigned short f16bits;   // IEEE half, as raw bits

#define PIXELS_PER_THREAD 16

__device__ __forceinline__ float half_to_float(f16bits h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ f16bits float_to_half(float f) {
    f16bits h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// --- element type traits: load/store 16 consecutive values of a plane --------------------------
struct F32 {
    typedef float T;
    static __device__ __forceinline__ float to_float(float v) { return v; }
    static __device__ __forceinline__ float from_float(float v) { return v; }
    static __device__ __forceinline__ void load16(const float* p, float* v) {
        const uint4* q = reinterpret_cast<const uint4*>(p);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            uint4 w = q[i];
            v[4 * i + 0] = __uint_as_float(w.x);
            v[4 * i + 1] = __uint_as_float(w.y);
            v[4 * i + 2] = __uint_as_float(w.z);
            v[4 * i + 3] = __uint_as_float(w.w);
        }
    }
    static __device__ __forceinline__ void store16(float* p, const float* v) {
        uint4* q = reinterpret_cast<uint4*>(p);
#pragma unroll
        for (int i = 0; i < 4; ++i)
            q[i] = make_uint4(__float_as_uint(v[4 * i]), __float_as_uint(v[4 * i + 1]),
                              __float_as_uint(v[4 * i + 2]), __float_as_uint(v[4 * i + 3]));
    }
};

struct F16 {
    typedef f16bits T;
    static __device__ __forceinline__ float to_float(f16bits v) { return half_to_float(v); }
    static __device__ __forceinline__ f16bits from_float(float v) { return float_to_half(v); }
    static __device__ __forceinline__ void load16(const f16bits* p, float* v) {
        const uint4* q = reinterpret_cast<const uint4*>(p);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            uint4 w = q[i];
            unsigned int words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                v[8 * i + 2 * j + 0] = half_to_float((f16bits)(words[j] & 0xffffu));
                v[8 * i + 2 * j + 1] = half_to_float((f16bits)(words[j] >> 16));
            }
        }
    }
    static __device__ __forceinline__ void store16(f16bits* p, const float* v) {
        uint4* q = reinterpret_cast<uint4*>(p);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            unsigned int words[4];
#pragma unroll
            for (int j = 0; j < 4; ++j)
                words[j] = (unsigned int)float_to_half(v[8 * i + 2 * j])
                         | ((unsigned int)float_to_half(v[8 * i + 2 * j + 1]) << 16);
            q[i] = make_uint4(words[0], words[1], words[2], words[3]);
        }
    }
};

// 16 RGB pixels = 48 bytes = 3 x uint4.
__device__ __forceinline__ void load_rgb16(const u8* p, u8* bytes) {
    const uint4* q = reinterpret_cast<const uint4*>(p);
#pragma unroll
    for (int i = 0; i < 3; ++i) {
        uint4 w = q[i];
        unsigned int words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int b = 0; b < 4; ++b) bytes[16 * i + 4 * j + b] = (u8)(words[j] >> (8 * b));
    }
}

__device__ __forceinline__ void store_rgb16(u8* p, const u8* bytes) {
    uint4* q = reinterpret_cast<uint4*>(p);
#pragma unroll
    for (int i = 0; i < 3; ++i) {
        unsigned int words[4];
#pragma unroll
        for (int j = 0; j < 4; ++j)
            words[j] = (unsigned int)bytes[16 * i + 4 * j] | ((unsigned int)bytes[16 * i + 4 * j + 1] << 8)
                     | ((unsigned int)bytes[16 * i + 4 * j + 2] << 16) | ((unsigned int)bytes[16 * i + 4 * j + 3] << 24);
        q[i] = make_uint4(words[0], words[1], words[2], words[3]);
    }
}

// I0 = u8 / 127.5 - 1, rounded as float32 `u8 * float32(1/127.5) - 1` (two roundings).
__device__ __forceinline__ float pixel_to_unit(u8 v) {
    return __fsub_rn(__fmul_rn((float)v, 1.0f / 127.5f), 1.0f);
}

__device__ __forceinline__ u8 blend_pixel(float a, float i0, float c) {
    float out = __fadd_rn(__fmul_rn(a, i0), __fmul_rn(__fsub_rn(1.0f, a), c));
    float p = rintf(__fmul_rn(__fadd_rn(out, 1.0f), 127.5f));
    p = fminf(fmaxf(p, 0.0f), 255.0f);
    return (u8)__float2uint_rn(p);
}

// --- prologue -----------------------------------------------------------------------------------
template <class E>
__device__ void frame_to_input(const u8* __restrict__ frames, long long frame_stride,
                               const float* __restrict__ intensities, typename E::T* __restrict__ x,
                               typename E::T* __restrict__ aus, int batch, int hw, int num_aus,
                               float au_scale_inv, int vector) {
    const long long groups = (hw + PIXELS_PER_THREAD - 1) / PIXELS_PER_THREAD;
    const long long total = groups * batch;
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    for (long long i = tid; i < (long long)batch * num_aus; i += stride)
        aus[i] = E::from_float(__fmul_rn(intensities[i], au_scale_inv));
    for (long long g = tid; g < total; g += stride) {
        const int n = (int)(g / groups);
        const int p0 = (int)(g - (long long)n * groups) * PIXELS_PER_THREAD;
        const u8* src = frames + n * frame_stride + 3LL * p0;
        typename E::T* dst = x + 3LL * n * hw + p0;
        if (vector) {
            u8 bytes[3 * PIXELS_PER_THREAD];
            float plane[PIXELS_PER_THREAD];
            load_rgb16(src, bytes);
#pragma unroll
            for (int c = 0; c < 3; ++c) {
#pragma unroll
                for (int k = 0; k < PIXELS_PER_THREAD; ++k) plane[k] = pixel_to_unit(bytes[3 * k + c]);
                E::store16(dst + (long long)c * hw, plane);
            }
        } else {
            const int count = min(PIXELS_PER_THREAD, hw - p0);
            for (int k = 0; k < count; ++k)
                for (int c = 0; c < 3; ++c)
                    dst[(long long)c * hw + k] = E::from_float(pixel_to_unit(src[3 * k + c]));
        }
    }
}

// --- epilogue -----------------------------------------------------------------------------------
template <class E>
__device__ void blend_to_u8(const typename E::T* __restrict__ color, const typename E::T* __restrict__ attention,
                            const u8* __restrict__ frames, long long frame_stride, u8* __restrict__ dst,
                            int batch, int hw, int vector) {
    const long long groups = (hw + PIXELS_PER_THREAD - 1) / PIXELS_PER_THREAD;
    const long long total = groups * batch;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x; g < total; g += stride) {
        const int n = (int)(g / groups);
        const int p0 = (int)(g - (long long)n * groups) * PIXELS_PER_THREAD;
        const typename E::T* c_plane = color + 3LL * n * hw + p0;
        const typename E::T* a_plane = attention + (long long)n * hw + p0;
        const u8* src = frames + n * frame_stride + 3LL * p0;
        u8* out = dst + 3LL * ((long long)n * hw + p0);
        if (vector) {
            u8 bytes[3 * PIXELS_PER_THREAD];
            float a[PIXELS_PER_THREAD], c[PIXELS_PER_THREAD];
            E::load16(a_plane, a);
            load_rgb16(src, bytes);
#pragma unroll
            for (int ch = 0; ch < 3; ++ch) {
                E::load16(c_plane + (long long)ch * hw, c);
#pragma unroll
                for (int k = 0; k < PIXELS_PER_THREAD; ++k)
                    bytes[3 * k + ch] = blend_pixel(a[k], pixel_to_unit(bytes[3 * k + ch]), c[k]);
            }
            store_rgb16(out, bytes);
        } else {
            const int count = min(PIXELS_PER_THREAD, hw - p0);
            for (int k = 0; k < count; ++k) {
                const float a = E::to_float(a_plane[k]);
                for (int ch = 0; ch < 3; ++ch)
                    out[3 * k + ch] = blend_pixel(a, pixel_to_unit(src[3 * k + ch]),
                                                  E::to_float(c_plane[(long long)ch * hw + k]));
            }
        }
    }
}

// --- output conversion: a tanh image (LATS's decoder) -> uint8 NHWC, no blend ---------------------
// pixel = rint((x + 1) * 127.5), two roundings as numpy's float32 (x + 1.0) * 127.5, clamped.
__device__ __forceinline__ u8 unit_to_pixel(float x) {
    float p = rintf(__fmul_rn(__fadd_rn(x, 1.0f), 127.5f));
    p = fminf(fmaxf(p, 0.0f), 255.0f);
    return (u8)__float2uint_rn(p);
}

template <class E>
__device__ void image_to_u8(const typename E::T* __restrict__ image, u8* __restrict__ dst, int batch, int hw,
                            int vector) {
    const long long groups = (hw + PIXELS_PER_THREAD - 1) / PIXELS_PER_THREAD;
    const long long total = groups * batch;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x; g < total; g += stride) {
        const int n = (int)(g / groups);
        const int p0 = (int)(g - (long long)n * groups) * PIXELS_PER_THREAD;
        const typename E::T* plane = image + 3LL * n * hw + p0;
        u8* out = dst + 3LL * ((long long)n * hw + p0);
        if (vector) {
            u8 bytes[3 * PIXELS_PER_THREAD];
            float v[PIXELS_PER_THREAD];
#pragma unroll
            for (int ch = 0; ch < 3; ++ch) {
                E::load16(plane + (long long)ch * hw, v);
#pragma unroll
                for (int k = 0; k < PIXELS_PER_THREAD; ++k) bytes[3 * k + ch] = unit_to_pixel(v[k]);
            }
            store_rgb16(out, bytes);
        } else {
            const int count = min(PIXELS_PER_THREAD, hw - p0);
            for (int k = 0; k < count; ++k)
                for (int ch = 0; ch < 3; ++ch)
                    out[3 * k + ch] = unit_to_pixel(E::to_float(plane[(long long)ch * hw + k]));
        }
    }
}

// --- entry points (unmangled names: exprengine/kernels/cuda.py looks them up) ----------------
#define PROLOGUE(NAME, E)                                                                         \
    extern "C" __global__ void __launch_bounds__(256) NAME(                                       \
        const u8* frames, long long frame_stride, const float* intensities, E::T* x, E::T* aus,   \
        int batch, int hw, int num_aus, float au_scale_inv, int vector) {                         \
        frame_to_input<E>(frames, frame_stride, intensities, x, aus, batch, hw, num_aus,          \
                          au_scale_inv, vector);                                                  \
    }

#define EPILOGUE(NAME, E)                                                                         \
    extern "C" __global__ void __launch_bounds__(256) NAME(                                       \
        const E::T* color, const E::T* attention, const u8* frames, long long frame_stride,       \
        u8* dst, int batch, int hw, int vector) {                                                 \
        blend_to_u8<E>(color, attention, frames, frame_stride, dst, batch, hw, vector);           \
    }

PROLOGUE(exprengine_frame_to_input_f32, F32)
PROLOGUE(exprengine_frame_to_input_f16, F16)
#define TO_U8(NAME, E)                                                                            \
    extern "C" __global__ void __launch_bounds__(256) NAME(                                       \
        const E::T* image, u8* dst, int batch, int hw, int vector) {                              \
        image_to_u8<E>(image, dst, batch, hw, vector);                                            \
    }

EPILOGUE(exprengine_blend_to_u8_f32, F32)
EPILOGUE(exprengine_blend_to_u8_f16, F16)
TO_U8(exprengine_to_u8_f32, F32)
TO_U8(exprengine_to_u8_f16, F16)
