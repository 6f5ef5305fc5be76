# Self-modifying code in 32-bit protected mode (Intel SDM vol. 3A, 11.6 "Self-Modifying
# Code": a write to a code byte takes effect for the instructions fetched after it):
# a store patches the immediate of the very next instruction, a loop patches the
# immediate of an instruction in its own body on every iteration, and a store turns
# a later instruction of the same straight-line run into another one.
#! mode: prot32
#! load: 0x10000
#! exit: 0x2d
#! serial: smc: al=42 ecx=0000000F esi=00000002\r\n
    mov esp, 0x80000
    mov byte ptr [patch1 + 1], 0x42          # mov al, imm8 is B0 ib
patch1:
    mov al, 0x0
    mov bl, al
    xor ecx, ecx
    mov edx, 0x5
loop2:
patch2:
    add ecx, 0x1                             # 83 C1 ib: adds 1, 2, 3, 4, 5
    inc byte ptr [patch2 + 2]
    dec edx
    jnz loop2
    mov dword ptr [ecx_val], ecx
    xor esi, esi
    mov word ptr [patch3], 0x4646            # nop; nop -> inc esi; inc esi
    mov eax, eax
    mov eax, eax
patch3:
    nop
    nop
    mov edi, msg
    call puts
    mov al, bl
    mov ecx, 0x2
    call puthexn
    mov edi, msg_ecx
    call puts
    mov ecx, 0x8
    mov eax, dword ptr [ecx_val]
    call puthexn
    mov edi, msg_esi
    call puts
    mov eax, esi
    call puthexn
    mov edi, crlf
    call puts
    cmp al, 0x0                              # AF defined (TEST leaves it undefined) at the end
    mov al, 0x2d
    out 0xf4, al
    hlt

puts:
    mov al, byte ptr [edi]
    test al, al
    jz puts_done
    call putc
    inc edi
    jmp puts
puts_done:
    ret

putc:
    push edx
    push eax
    mov dx, 0x3fd
putc_wait:
    in al, dx
    test al, 0x20
    jz putc_wait
    pop eax
    mov dx, 0x3f8
    out dx, al
    pop edx
    ret

# puthexn: print the low ECX hex digits of EAX.
puthexn:
    push ecx
    push edx
    push eax
    mov edx, ecx
    shl ecx, 0x2
    ror eax, cl
puthex_loop:
    rol eax, 0x4
    push eax
    and al, 0xf
    cmp al, 0x9
    jbe puthex_digit
    add al, 0x7
puthex_digit:
    add al, 0x30
    call putc
    pop eax
    dec edx
    jnz puthex_loop
    pop eax
    pop edx
    pop ecx
    ret

ecx_val:
    .long 0
msg:
    .ascii "smc: al="
    .byte 0x00
msg_ecx:
    .ascii " ecx="
    .byte 0x00
msg_esi:
    .ascii " esi="
    .byte 0x00
crlf:
    .byte 0x0d, 0x0a, 0x00
