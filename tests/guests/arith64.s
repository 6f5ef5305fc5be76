# Arithmetic and flags in 64-bit long mode (CPL 0, identity-mapped paging).
# Flags the SDM leaves undefined are masked off the pushed copies.
#! mode: long64
#! load: 0x10000
#! exit: 0x13
    mov rsp, 0x80000
    mov rax, 0x7fffffffffffffff
    add rax, 0x1
    pushfq
    mov rbx, -1
    add rbx, 0x1
    pushfq
    mov rcx, 0x123456789abcdef0
    mov rdx, 0x0fedcba987654321
    imul rcx, rdx
    pushfq
    and qword ptr [rsp], 0x801
    mov r8, 0xdeadbeefcafebabe
    mov rax, r8
    mov r9, 0x1000
    mul r9
    pushfq
    and qword ptr [rsp], 0x801
    mov r10, rax
    mov r11, rdx
    mov rax, 0x123456789
    cqo
    mov r12, 0x7
    idiv r12
    mov r13, rdx
    mov r14, 0x8000000000000001
    ror r14, 0x1
    pushfq
    shr r14, 0x3f
    pushfq
    and qword ptr [rsp], -0x811
    mov r15d, 0xffffffff        # a 32-bit write zero-extends
    movsxd rsi, r15d
    xchg rsi, rdi
    cmp rdi, r15
    setl al
    setb bl
    cmove rcx, rsi
    pushfq
    mov al, 0x13
    out 0xf4, al
    hlt
