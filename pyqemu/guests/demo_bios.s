# pyqemu's demo guest: real mode from the reset vector.  It greets on COM1, reads the
# CPU vendor with CPUID, and powers off through isa-debug-exit.
#! mode: bios
#! exit: 0x0
    cli
    mov ax, cs
    mov ds, ax
    xor ax, ax
    mov ss, ax
    mov sp, 0x7000
    mov si, hello
    call puts
    mov si, vendor
    call puts
    xor eax, eax
    cpuid                       # leaf 0: the vendor string in EBX, EDX, ECX
    mov edi, ecx
    call put4                   # EBX
    mov ebx, edx
    call put4                   # EDX
    mov ebx, edi
    call put4                   # ECX
    mov si, bye
    call puts
    mov al, 0x0
    out 0xf4, al                # isa-debug-exit: power off, exit status 1
    hlt

# put4: print the four bytes of EBX, low byte first.
put4:
    mov cx, 0x4
put4_loop:
    mov al, bl
    call putc
    shr ebx, 0x8
    loop put4_loop
    ret

# puts: print the NUL-terminated string at DS:SI.
puts:
    lodsb
    test al, al
    jz puts_done
    call putc
    jmp puts
puts_done:
    ret

# putc: print AL on COM1 once the transmitter holding register is empty.
putc:
    push dx
    push ax
    mov dx, 0x3fd
putc_wait:
    in al, dx
    test al, 0x20
    jz putc_wait
    pop ax
    mov dx, 0x3f8
    out dx, al
    pop dx
    ret

hello:
    .ascii "Hello from pyqemu! Real mode, straight from the reset vector."
    .byte 0x0d, 0x0a, 0x00
vendor:
    .ascii "CPUID vendor: "
    .byte 0x00
bye:
    .byte 0x0d, 0x0a
    .ascii "Powering off through isa-debug-exit."
    .byte 0x0d, 0x0a, 0x00
