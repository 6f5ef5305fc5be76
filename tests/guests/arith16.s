# Arithmetic, flags and segments in real mode, loaded like a boot sector.
#! mode: real
#! load: 0x7c00
#! exit: 0x14
    cli
    xor ax, ax
    mov ss, ax
    mov sp, 0x7000
    mov ax, 0x7fff
    add ax, 0x1
    pushf
    mov bx, 0xffff
    add bl, 0x1
    pushf
    mov cx, 0x1234
    mov dx, 0x5678
    sub cx, dx
    pushf
    mov ax, 0x00ff
    mov bl, 0x10
    mul bl
    pushf
    mov bp, sp
    and word ptr [bp], 0x801    # SF, ZF, AF, PF undefined (MUL)
    mov dx, 0x0
    mov ax, 0x1234
    mov cx, 0x10
    div cx
    mov si, ax
    mov di, dx
    mov bp, 0x99
    add bp, 0x1
    pushf
    mov ax, 0x1000
    mov es, ax
    mov word ptr es:[0x10], 0xbeef
    mov bx, word ptr es:[0x10]
    rcl bx, 0x1
    pushf
    mov al, 0x14
    out 0xf4, al
    hlt
