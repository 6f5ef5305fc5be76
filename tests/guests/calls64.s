# Recursive calls, the stack and string instructions in 64-bit mode:
# fib(15) by naive recursion, a rep movsq copy, and a repne scasb search.
#! mode: long64
#! load: 0x10000
#! exit: 0x17
    mov rsp, 0x80000
    mov rdi, 15
    call fib
    mov r12, rax                # fib(15) = 610
    lea rsi, [rip + src]
    mov rdi, 0x30000
    mov rcx, 4
    cld
    rep movsq
    mov rdi, 0x30000
    mov al, 0x5a
    mov rcx, 32
    repne scasb
    mov r13, rcx
    mov r14, rdi
    mov al, 0x17
    out 0xf4, al
    hlt
fib:
    cmp rdi, 2
    jb fib_base
    push rdi
    dec rdi
    call fib
    pop rdi
    push rax
    sub rdi, 2
    call fib
    pop rdx
    add rax, rdx
    ret
fib_base:
    mov rax, rdi
    ret
src:
    .byte 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08
    .byte 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18
    .byte 0x21, 0x22, 0x5a, 0x24, 0x25, 0x26, 0x27, 0x28
    .byte 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38
