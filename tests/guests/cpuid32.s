# CPUID read back: the vendor string of leaf 0 is printed on the UART, and leaves
# 0, 1 and 0x80000000 are left in memory at 0x3000 for the suite to compare.
#! mode: prot32
#! load: 0x10000
#! exit: 0x16
#! cpuid-leaf1: 0x3018
    mov esp, 0x8000
    xor eax, eax
    cmp eax, 0x0                # AF defined (XOR leaves it undefined): no later instruction
    cpuid                       # here writes the flags, and the final state is compared
    mov dword ptr [0x3000], eax
    mov dword ptr [0x3004], ebx
    mov dword ptr [0x3008], edx
    mov dword ptr [0x300c], ecx
    mov eax, 0x1
    cpuid
    mov dword ptr [0x3010], eax
    mov dword ptr [0x3014], ebx
    mov dword ptr [0x3018], ecx
    mov dword ptr [0x301c], edx
    mov eax, 0x80000000
    cpuid
    mov dword ptr [0x3020], eax
    mov esi, 0x3004
    mov ecx, 12
    mov dx, 0x3f8
print:
    lodsb
    out dx, al
    loop print
    mov al, 0x0a
    out dx, al
    mov al, 0x16
    out 0xf4, al
    hlt
