# Arithmetic and flags in flat 32-bit protected mode.  Each step leaves its result
# and the flags it produced in registers or memory, and the conformance suite
# compares the final state of kvm and interp.  Flags the SDM leaves undefined for
# an instruction are masked off the pushed copy (and dword ptr [esp], ...), since
# either accelerator may leave them either way.
#! mode: prot32
#! load: 0x10000
#! exit: 0x12
    mov esp, 0x8000
    mov eax, 0x7fffffff
    add eax, 0x1                # OF, SF, AF set; CF clear
    pushfd
    mov ebx, 0xffffffff
    add ebx, 0x1                # CF, ZF, AF, PF set
    pushfd
    mov ecx, 0x80000000
    sub ecx, 0x1                # OF set
    pushfd
    mov edx, 0x12345678
    imul edx, edx, 0x9abc       # 3-operand imul, OF/CF from the overflow
    pushfd
    and dword ptr [esp], 0x801  # SF, ZF, AF, PF undefined (SDM vol. 2A, IMUL)
    mov eax, 0xdeadbeef
    mov esi, 0x1234
    mul esi                     # EDX:EAX
    pushfd
    and dword ptr [esp], 0x801  # SF, ZF, AF, PF undefined (MUL)
    mov esi, eax
    mov edi, edx
    mov eax, 0x10000
    xor edx, edx
    mov ecx, 0x7
    div ecx                     # quotient and remainder
    mov ebp, edx
    mov ebx, 0x81
    shl ebx, 0x19               # bits out through CF
    pushfd
    and dword ptr [esp], 0xfffff7ef  # OF undefined for count > 1, AF for count > 0 (SAL/SAR/SHL/SHR)
    shl ebx, 0x1                # count 1: OF = MSB(result) XOR CF
    pushfd
    and dword ptr [esp], 0xffffffef
    sar ebx, 0x3
    pushfd
    and dword ptr [esp], 0xfffff7ef
    rol ebx, 0x5
    pushfd
    and dword ptr [esp], 0xfffff7ef  # OF undefined for count > 1 (RCL/RCR/ROL/ROR); ROL keeps
                                     # AF as the AND above left it: undefined (AND)
    mov ecx, 0x0
    adc ecx, 0xff               # carry in: CF=0, from the AND above
    sbb ecx, 0x100
    pushfd
    neg ecx
    pushfd
    not ecx
    inc ecx
    dec ecx
    pushfd
    and ecx, 0xf0f0
    or ecx, 0x1
    xor ecx, 0x101
    pushfd
    and dword ptr [esp], 0xffffffef  # AF undefined (AND/OR/XOR)
    bsf eax, ecx
    bsr edx, ecx
    test ecx, ecx               # define the flags BSF/BSR leave undefined
    bswap ecx
    movzx esi, cl
    movsx edi, ch
    lea ebx, [esi + edi*4 + 0x10]
    cmp ebx, esi                # every status flag defined in the final state compared
                                # (TEST above leaves AF undefined)
    mov al, 0x12
    out 0xf4, al
    hlt
