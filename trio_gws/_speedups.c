/*
 * trio_gws._speedups: WebSocket masking (RFC 6455 section 5.3) in C.
 *
 * Same contract as trio_gws._mask.apply_mask_python: apply_mask(data, key, offset=0)
 * returns a new bytes object, data XOR the 4-byte key repeated, with the key rotated by
 * offset & 3 (offset is where data sits in the frame payload). The pure-Python version
 * runs at about 200 MiB/s; this loop XORs 8 bytes at a time and runs near memory speed.
 *
 * Portable C99: unaligned loads and stores go through memcpy (which compilers turn into
 * plain moves), so there is no undefined behaviour and no intrinsic is needed.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* Below this size the GIL round trip costs more than it lets other threads win. */
#define RELEASE_GIL_AT ((Py_ssize_t)64 * 1024)

/* dst[i] = src[i] ^ key[i & 3] for i < n; key is already rotated by the offset. */
static void
xor_mask(const unsigned char *src, unsigned char *dst, Py_ssize_t n,
         const unsigned char key[4])
{
    unsigned char pattern[8];
    uint64_t mask64;
    Py_ssize_t i = 0;
    int j;

    /* The key repeated twice, as bytes in memory order: endianness does not matter. */
    for (j = 0; j < 8; j++) {
        pattern[j] = key[j & 3];
    }
    memcpy(&mask64, pattern, sizeof(mask64));

    for (; n - i >= 8; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        w ^= mask64;
        memcpy(dst + i, &w, 8);
    }
    /* i is a multiple of 8 here, so key[i & 3] continues the same pattern. */
    for (; i < n; i++) {
        dst[i] = (unsigned char)(src[i] ^ key[i & 3]);
    }
}

/* offset & 3 for a non-negative int (of any size); -1 with an exception set otherwise. */
static int
offset_shift(PyObject *offset_obj)
{
    PyObject *index;
    long long value;
    int overflow = 0;
    unsigned long long low;

    index = PyNumber_Index(offset_obj);
    if (index == NULL) {
        return -1;
    }
    value = PyLong_AsLongLongAndOverflow(index, &overflow);
    if (value == -1 && PyErr_Occurred()) {
        Py_DECREF(index);
        return -1;
    }
    if (overflow < 0 || (overflow == 0 && value < 0)) {
        Py_DECREF(index);
        PyErr_SetString(PyExc_ValueError, "offset must be non-negative");
        return -1;
    }
    /* Modulo 2**64 whatever the size, which keeps the two low bits exact. */
    low = (overflow == 0) ? (unsigned long long)value : PyLong_AsUnsignedLongLongMask(index);
    Py_DECREF(index);
    if (low == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    return (int)(low & 3u);
}

static PyObject *
apply_mask(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"data", "key", "offset", NULL};
    PyObject *data_obj, *key_obj, *offset_obj = NULL;
    Py_buffer data, key;
    PyObject *result = NULL;
    unsigned char rotated[4];
    int shift = 0, j;

    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:apply_mask", kwlist,
                                     &data_obj, &key_obj, &offset_obj)) {
        return NULL;
    }
    /* PyBUF_SIMPLE: raw bytes of any C-contiguous buffer; BufferError otherwise. */
    if (PyObject_GetBuffer(data_obj, &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(key_obj, &key, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    if (key.len != 4) {
        PyErr_Format(PyExc_ValueError, "mask key must be 4 bytes, got %zd", key.len);
        goto done;
    }
    if (offset_obj != NULL) {
        shift = offset_shift(offset_obj);
        if (shift < 0) {
            goto done;
        }
    }
    for (j = 0; j < 4; j++) {
        rotated[j] = ((const unsigned char *)key.buf)[(j + shift) & 3];
    }

    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result == NULL || data.len == 0) {
        goto done;
    }
    if (data.len >= RELEASE_GIL_AT) {
        /* Safe: the exported buffer pins data (a bytearray cannot resize meanwhile),
           and result is not visible to any other thread yet. */
        Py_BEGIN_ALLOW_THREADS
        xor_mask((const unsigned char *)data.buf,
                 (unsigned char *)PyBytes_AS_STRING(result), data.len, rotated);
        Py_END_ALLOW_THREADS
    }
    else {
        xor_mask((const unsigned char *)data.buf,
                 (unsigned char *)PyBytes_AS_STRING(result), data.len, rotated);
    }

done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&data);
    return result;
}

PyDoc_STRVAR(apply_mask_doc,
"apply_mask(data, key, offset=0)\n"
"--\n"
"\n"
"Mask or unmask data (any C-contiguous buffer) with the 4-byte key; offset is the\n"
"position of data within the frame payload. Returns new bytes.");

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_VARARGS | METH_KEYWORDS,
     apply_mask_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot speedups_slots[] = {
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    /* No module state and no shared mutable data: safe without the GIL. */
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "trio_gws._speedups",
    "Compiled WebSocket masking; trio_gws._mask falls back to pure Python without it.",
    0,
    speedups_methods,
    speedups_slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
