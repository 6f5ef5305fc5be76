/* The host processor as the oracle of tests/fpu: each call runs one SSE or x87
 * instruction on the given operands under the given MXCSR / x87 control word and
 * returns the flags it left (MXCSR, or the x87 status word), the result through *out.
 * Each instruction runs inside one asm statement together with the loads of the
 * control register and the read of the flags, so the compiler cannot move anything
 * between them; the caller's MXCSR and a clean x87 state (FNINIT) are restored before
 * returning. Built by tests/fpu/oracle.py with the machine's gcc. */
#include <stdint.h>
#include <string.h>

/* --- SSE: a, b are bit patterns; op names the instruction --- */

#define SSE_BINOP(insn, mov)                                              \
    __asm__ volatile("stmxcsr %[save]\n\t"                                \
                     "ldmxcsr %[csr]\n\t"                                 \
                     mov " %[a], %%xmm0\n\t"                              \
                     mov " %[b], %%xmm1\n\t"                              \
                     insn " %%xmm1, %%xmm0\n\t"                           \
                     mov " %%xmm0, %[r]\n\t"                              \
                     "stmxcsr %[after]\n\t"                               \
                     "ldmxcsr %[save]\n\t"                                \
                     : [r] "=&r"(r), [after] "=m"(after), [save] "+m"(save) \
                     : [a] "r"(a), [b] "r"(b), [csr] "m"(mxcsr)           \
                     : "xmm0", "xmm1")

/* a compare that sets ZF, PF, CF: r = ZF<<2 | PF<<1 | CF */
#define SSE_COMI(insn, mov)                                               \
    __asm__ volatile("stmxcsr %[save]\n\t"                                \
                     "ldmxcsr %[csr]\n\t"                                 \
                     mov " %[a], %%xmm0\n\t"                              \
                     mov " %[b], %%xmm1\n\t"                              \
                     insn " %%xmm1, %%xmm0\n\t"                           \
                     "setz %b[z]\n\t"                                     \
                     "setp %b[p]\n\t"                                     \
                     "setc %b[c]\n\t"                                     \
                     "stmxcsr %[after]\n\t"                               \
                     "ldmxcsr %[save]\n\t"                                \
                     : [z] "=&q"(z), [p] "=&q"(p), [c] "=&q"(c),          \
                       [after] "=m"(after), [save] "+m"(save)             \
                     : [a] "r"(a), [b] "r"(b), [csr] "m"(mxcsr)           \
                     : "xmm0", "xmm1", "cc")

/* xmm -> general register (cvt*2si): insn "%%xmm0, %[r]" with r of the given size */
#define SSE_TOINT(insn, mov, reg)                                         \
    __asm__ volatile("stmxcsr %[save]\n\t"                                \
                     "ldmxcsr %[csr]\n\t"                                 \
                     mov " %[a], %%xmm0\n\t"                              \
                     insn " %%xmm0, %" reg "[r]\n\t"                      \
                     "stmxcsr %[after]\n\t"                               \
                     "ldmxcsr %[save]\n\t"                                \
                     : [r] "=&r"(r), [after] "=m"(after), [save] "+m"(save) \
                     : [a] "r"(a), [csr] "m"(mxcsr)                       \
                     : "xmm0")

/* general register -> xmm (cvtsi2s*) */
#define SSE_FROMINT(insn, mov, reg)                                       \
    __asm__ volatile("stmxcsr %[save]\n\t"                                \
                     "ldmxcsr %[csr]\n\t"                                 \
                     "pxor %%xmm0, %%xmm0\n\t"                            \
                     insn " %" reg "[a], %%xmm0\n\t"                      \
                     mov " %%xmm0, %[r]\n\t"                              \
                     "stmxcsr %[after]\n\t"                               \
                     "ldmxcsr %[save]\n\t"                                \
                     : [r] "=&r"(r), [after] "=m"(after), [save] "+m"(save) \
                     : [a] "r"(a), [csr] "m"(mxcsr)                       \
                     : "xmm0")

/* xmm -> xmm of another width (cvtss2sd, cvtsd2ss) */
#define SSE_CONV(insn, movin, movout)                                     \
    __asm__ volatile("stmxcsr %[save]\n\t"                                \
                     "ldmxcsr %[csr]\n\t"                                 \
                     movin " %[a], %%xmm1\n\t"                            \
                     "pxor %%xmm0, %%xmm0\n\t"                            \
                     insn " %%xmm1, %%xmm0\n\t"                           \
                     movout " %%xmm0, %[r]\n\t"                           \
                     "stmxcsr %[after]\n\t"                               \
                     "ldmxcsr %[save]\n\t"                                \
                     : [r] "=&r"(r), [after] "=m"(after), [save] "+m"(save) \
                     : [a] "r"(a), [csr] "m"(mxcsr)                       \
                     : "xmm0", "xmm1")

#define SSE_ROUND(insn, mov, imm)                                         \
    __asm__ volatile("stmxcsr %[save]\n\t"                                \
                     "ldmxcsr %[csr]\n\t"                                 \
                     mov " %[a], %%xmm1\n\t"                              \
                     insn " $" #imm ", %%xmm1, %%xmm0\n\t"                \
                     mov " %%xmm0, %[r]\n\t"                              \
                     "stmxcsr %[after]\n\t"                               \
                     "ldmxcsr %[save]\n\t"                                \
                     : [r] "=&r"(r), [after] "=m"(after), [save] "+m"(save) \
                     : [a] "r"(a), [csr] "m"(mxcsr)                       \
                     : "xmm0", "xmm1")

enum {
    ADDSS, SUBSS, MULSS, DIVSS, SQRTSS, MINSS, MAXSS, COMISS, UCOMISS,
    ADDSD, SUBSD, MULSD, DIVSD, SQRTSD, MINSD, MAXSD, COMISD, UCOMISD,
    CVTSS2SD, CVTSD2SS,
    CVTSS2SI32, CVTSS2SI64, CVTTSS2SI32, CVTTSS2SI64,
    CVTSD2SI32, CVTSD2SI64, CVTTSD2SI32, CVTTSD2SI64,
    CVTSI32SS, CVTSI64SS, CVTSI32SD, CVTSI64SD,
    ROUNDSS_0, ROUNDSS_1, ROUNDSS_2, ROUNDSS_3, ROUNDSS_4,
    ROUNDSS_8, ROUNDSS_9, ROUNDSS_10, ROUNDSS_11, ROUNDSS_12,
    ROUNDSD_0, ROUNDSD_1, ROUNDSD_2, ROUNDSD_3, ROUNDSD_4,
    ROUNDSD_8, ROUNDSD_9, ROUNDSD_10, ROUNDSD_11, ROUNDSD_12,
    SSE_OPS
};

int sse_op_count(void) { return SSE_OPS; }

uint32_t sse(int op, uint64_t a, uint64_t b, uint32_t mxcsr, uint64_t *out)
{
    uint64_t r = 0;
    uint32_t after = 0, save = 0;
    uint8_t z = 0, p = 0, c = 0;
    uint32_t a32 = (uint32_t)a, b32 = (uint32_t)b, r32 = 0;
    switch (op) {
#define S32(name, insn) case name: { uint32_t a = a32, b = b32; uint32_t r; SSE_BINOP(insn, "movd"); r32 = r; } break;
#define S64(name, insn) case name: SSE_BINOP(insn, "movq"); break;
    S32(ADDSS, "addss") S32(SUBSS, "subss") S32(MULSS, "mulss") S32(DIVSS, "divss")
    S32(MINSS, "minss") S32(MAXSS, "maxss")
    S64(ADDSD, "addsd") S64(SUBSD, "subsd") S64(MULSD, "mulsd") S64(DIVSD, "divsd")
    S64(MINSD, "minsd") S64(MAXSD, "maxsd")
    case SQRTSS: { uint32_t a = a32, b = a32; uint32_t r; SSE_BINOP("sqrtss", "movd"); r32 = r; } break;
    case SQRTSD: { uint64_t b = a; SSE_BINOP("sqrtsd", "movq"); } break;
    case COMISS: { uint32_t a = a32, b = b32; SSE_COMI("comiss", "movd"); } goto rel;
    case UCOMISS: { uint32_t a = a32, b = b32; SSE_COMI("ucomiss", "movd"); } goto rel;
    case COMISD: SSE_COMI("comisd", "movq"); goto rel;
    case UCOMISD: SSE_COMI("ucomisd", "movq"); goto rel;
    case CVTSS2SD: { uint32_t a = a32; SSE_CONV("cvtss2sd", "movd", "movq"); } break;
    case CVTSD2SS: { uint32_t r; SSE_CONV("cvtsd2ss", "movq", "movd"); r32 = r; } break;
#define TOI32(name, insn, mov, T) case name: { T a = (T)a64; uint32_t r; SSE_TOINT(insn, mov, "k"); r32 = r; } break;
#define TOI64(name, insn, mov, T) case name: { T a = (T)a64; SSE_TOINT(insn, mov, "q"); } break;
    default: break;
    }
    {
        uint64_t a64 = a;
        switch (op) {
        TOI32(CVTSS2SI32, "cvtss2si", "movd", uint32_t)
        TOI64(CVTSS2SI64, "cvtss2si", "movd", uint32_t)
        TOI32(CVTTSS2SI32, "cvttss2si", "movd", uint32_t)
        TOI64(CVTTSS2SI64, "cvttss2si", "movd", uint32_t)
        TOI32(CVTSD2SI32, "cvtsd2si", "movq", uint64_t)
        TOI64(CVTSD2SI64, "cvtsd2si", "movq", uint64_t)
        TOI32(CVTTSD2SI32, "cvttsd2si", "movq", uint64_t)
        TOI64(CVTTSD2SI64, "cvttsd2si", "movq", uint64_t)
        case CVTSI32SS: { uint32_t a = (uint32_t)a64; uint32_t r; SSE_FROMINT("cvtsi2ssl", "movd", "k"); r32 = r; } break;
        case CVTSI64SS: { uint32_t r; SSE_FROMINT("cvtsi2ssq", "movd", "q"); r32 = r; } break;
        case CVTSI32SD: { uint32_t a = (uint32_t)a64; SSE_FROMINT("cvtsi2sdl", "movq", "k"); } break;
        case CVTSI64SD: SSE_FROMINT("cvtsi2sdq", "movq", "q"); break;
#define RS(imm) case ROUNDSS_##imm: { uint32_t a = (uint32_t)a64; uint32_t r; SSE_ROUND("roundss", "movd", imm); r32 = r; } break;
#define RD(imm) case ROUNDSD_##imm: SSE_ROUND("roundsd", "movq", imm); break;
        RS(0) RS(1) RS(2) RS(3) RS(4) RS(8) RS(9) RS(10) RS(11) RS(12)
        RD(0) RD(1) RD(2) RD(3) RD(4) RD(8) RD(9) RD(10) RD(11) RD(12)
        default: break;
        }
    }
    switch (op) {
    case ADDSS: case SUBSS: case MULSS: case DIVSS: case SQRTSS: case MINSS: case MAXSS:
    case CVTSD2SS: case CVTSS2SI32: case CVTTSS2SI32: case CVTSD2SI32: case CVTTSD2SI32:
    case CVTSI32SS: case CVTSI64SS:
    case ROUNDSS_0: case ROUNDSS_1: case ROUNDSS_2: case ROUNDSS_3: case ROUNDSS_4:
    case ROUNDSS_8: case ROUNDSS_9: case ROUNDSS_10: case ROUNDSS_11: case ROUNDSS_12:
        r = r32;
        break;
    default:
        break;
    }
    *out = r;
    return after;
rel:
    *out = (uint64_t)(z << 2 | p << 1 | c);
    return after;
}

/* --- x87: operands are 10-byte floatx80 images (or the memory operand's bytes) --- */

#define X87_BIN(insn)                                                     \
    __asm__ volatile("fninit\n\t"                                         \
                     "fldcw %[cw]\n\t"                                    \
                     "fldt (%[pb])\n\t"                                   \
                     "fldt (%[pa])\n\t"                                   \
                     "fnclex\n\t"                                         \
                     insn "\n\t"                                          \
                     "fnstsw %[sw]\n\t"                                   \
                     "fstpt (%[po])\n\t"                                  \
                     "fninit\n\t"                                         \
                     : [sw] "=m"(sw)                                      \
                     : [pa] "r"(a), [pb] "r"(b), [po] "r"(out), [cw] "m"(cw) \
                     : "memory", "st", "st(1)", "st(2)", "st(3)", "st(4)", \
                       "st(5)", "st(6)", "st(7)")

/* a load from memory to the stack: the result as floatx80 */
#define X87_LOAD(insn)                                                    \
    __asm__ volatile("fninit\n\t"                                         \
                     "fldcw %[cw]\n\t"                                    \
                     "fnclex\n\t"                                         \
                     insn " (%[pa])\n\t"                                  \
                     "fnstsw %[sw]\n\t"                                   \
                     "fstpt (%[po])\n\t"                                  \
                     "fninit\n\t"                                         \
                     : [sw] "=m"(sw)                                      \
                     : [pa] "r"(a), [po] "r"(out), [cw] "m"(cw)           \
                     : "memory", "st", "st(1)", "st(2)", "st(3)", "st(4)", \
                       "st(5)", "st(6)", "st(7)")

/* a store from the stack (a floatx80) to memory */
#define X87_STORE(insn)                                                   \
    __asm__ volatile("fninit\n\t"                                         \
                     "fldcw %[cw]\n\t"                                    \
                     "fldt (%[pa])\n\t"                                   \
                     "fnclex\n\t"                                         \
                     insn " (%[po])\n\t"                                  \
                     "fnstsw %[sw]\n\t"                                   \
                     "fninit\n\t"                                         \
                     : [sw] "=m"(sw)                                      \
                     : [pa] "r"(a), [po] "r"(out), [cw] "m"(cw)           \
                     : "memory", "st", "st(1)", "st(2)", "st(3)", "st(4)", \
                       "st(5)", "st(6)", "st(7)")

enum {
    FADD, FSUB, FMUL, FDIV, FSQRT, FPREM, FPREM1, FSCALE, FRNDINT, FCOM, FUCOM,
    FLD32, FLD64, FST32, FST64, FILD16, FILD32, FILD64,
    FIST16, FIST32, FIST64, FISTT16, FISTT32, FISTT64,
    X87_OPS
};

int x87_op_count(void) { return X87_OPS; }

uint16_t x87(int op, const uint8_t *a, const uint8_t *b, uint16_t cw, uint8_t *out)
{
    uint16_t sw = 0;
    switch (op) {
    case FADD: X87_BIN("fadd %%st(1), %%st"); break;
    case FSUB: X87_BIN("fsub %%st(1), %%st"); break;
    case FMUL: X87_BIN("fmul %%st(1), %%st"); break;
    case FDIV: X87_BIN("fdiv %%st(1), %%st"); break;
    case FSQRT: X87_BIN("fsqrt"); break;
    case FPREM: X87_BIN("fprem"); break;
    case FPREM1: X87_BIN("fprem1"); break;
    case FSCALE: X87_BIN("fscale"); break;
    case FRNDINT: X87_BIN("frndint"); break;
    case FCOM: X87_BIN("fcom %%st(1)"); break;
    case FUCOM: X87_BIN("fucom %%st(1)"); break;
    case FLD32: X87_LOAD("flds"); break;
    case FLD64: X87_LOAD("fldl"); break;
    case FILD16: X87_LOAD("filds"); break;
    case FILD32: X87_LOAD("fildl"); break;
    case FILD64: X87_LOAD("fildll"); break;
    case FST32: X87_STORE("fstps"); break;
    case FST64: X87_STORE("fstpl"); break;
    case FIST16: X87_STORE("fistps"); break;
    case FIST32: X87_STORE("fistpl"); break;
    case FIST64: X87_STORE("fistpll"); break;
    case FISTT16: X87_STORE("fisttps"); break;
    case FISTT32: X87_STORE("fisttpl"); break;
    case FISTT64: X87_STORE("fisttpll"); break;
    default: break;
    }
    return sw;
}
