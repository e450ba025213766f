;; The face scoring kernel (see kernel.ts for the memory layout and for the
;; proof that the int8 prefilter is exact). Assembled to kernel.wasm by
;; scripts/build-wasm.mjs with wabt; the test kernel-wat.test.ts checks that
;; kernel.wasm is exactly this file assembled.
;;
;; Two exports over one linear memory ("mem", owned by the kernel):
;;   scores  - float32 dot product of every matrix row with the query
;;   qscores - int8 x int16 dot products, with the prefilter's candidate pass
;;             fused in while the row is hot
;; Every address is a byte offset into "mem"; callers pad rows to the loop step.
(module
  (memory (export "mem") 1)

  ;; scores(mat, q, n, dim, out): out[r] = dot(mat row r, q) for r < n.
  ;; f32x4 with four independent accumulators: 16 floats per loop step, so
  ;; dim must be a multiple of 16. The row sum is (a0 + a1) + (a2 + a3), then
  ;; (lane0 + lane1) + (lane2 + lane3): scoreJs does not round the same way,
  ;; the tests compare within float32 tolerance.
  (func (export "scores") (param $mat i32) (param $q i32) (param $n i32) (param $dim i32) (param $out i32)
    (local $r i32) (local $mp i32) (local $qp i32) (local $qend i32)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local.set $mp (local.get $mat))
    (local.set $qend (i32.add (local.get $q) (i32.shl (local.get $dim) (i32.const 2))))
    (block $done
      (br_if $done (i32.eqz (local.get $n)))
      (loop $rows
        (local.set $a0 (v128.const i32x4 0 0 0 0))
        (local.set $a1 (v128.const i32x4 0 0 0 0))
        (local.set $a2 (v128.const i32x4 0 0 0 0))
        (local.set $a3 (v128.const i32x4 0 0 0 0))
        (local.set $qp (local.get $q))
        (loop $cols
          ;; a_k += mat[mp + 16k .. +16) * q[qp + 16k .. +16), k = 0..3
          (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (v128.load (local.get $mp)) (v128.load (local.get $qp)))))
          (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (v128.load offset=16 (local.get $mp)) (v128.load offset=16 (local.get $qp)))))
          (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (v128.load offset=32 (local.get $mp)) (v128.load offset=32 (local.get $qp)))))
          (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (v128.load offset=48 (local.get $mp)) (v128.load offset=48 (local.get $qp)))))
          (local.set $mp (i32.add (local.get $mp) (i32.const 64)))
          (local.set $qp (i32.add (local.get $qp) (i32.const 64)))
          (br_if $cols (i32.lt_u (local.get $qp) (local.get $qend))))
        (local.set $a0 (f32x4.add (f32x4.add (local.get $a0) (local.get $a1)) (f32x4.add (local.get $a2) (local.get $a3))))
        (f32.store (local.get $out)
          (f32.add
            (f32.add (f32x4.extract_lane 0 (local.get $a0)) (f32x4.extract_lane 1 (local.get $a0)))
            (f32.add (f32x4.extract_lane 2 (local.get $a0)) (f32x4.extract_lane 3 (local.get $a0)))))
        (local.set $out (i32.add (local.get $out) (i32.const 4)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br_if $rows (i32.lt_u (local.get $r) (local.get $n))))))

  ;; qscores(mat8, q16, n, qstride, out, cand, scale, resid, lsOut, t, ka, kc) -> nc
  ;;   out[r] (int32) = D_r = sum_i x8[r][i] * q16[i]
  ;;   A_r = (scale[r] * t) * D_r,  E_r = resid[r] * ka + kc        (float64)
  ;;   if A_r + E_r >= L: cand[nc++] = r; L = max(L, A_r - E_r)     (L from -inf)
  ;; and the final L (= L*) is stored at lsOut.
  ;;
  ;; The int8 matrix is in blocks of four rows interleaved by 8-byte chunks:
  ;; block b = r >> 2 starts at mat8 + b*4*qstride; chunk c of slot k = r & 3 is
  ;; at c*32 + k*8 in it. One sequential stream feeds four rows, and each probe
  ;; chunk loaded serves all four. Per chunk: v128.load8x8_s widens 8 bytes to
  ;; int16x8, i32x4.dot_i16x8_s multiplies by the probe and adds pairs. The loop
  ;; does two chunks (16 elements) a step, so qstride is a multiple of 16.
  ;; Unused slots of the last block are zero rows, never candidates (r + k < n).
  (func (export "qscores")
    (param $mat i32) (param $q i32) (param $n i32) (param $qstride i32) (param $out i32)
    (param $cand i32) (param $scale i32) (param $resid i32) (param $lsOut i32)
    (param $t f64) (param $ka f64) (param $kc f64)
    (result i32)
    (local $r i32) (local $mp i32) (local $qp i32) (local $qend i32)
    (local $p0 i32) (local $p1 i32) (local $p2 i32) (local $p3 i32)
    (local $nc i32) (local $dsum i32)
    (local $acc0 v128) (local $acc1 v128) (local $acc2 v128) (local $acc3 v128) (local $pv v128)
    (local $ls f64) (local $a f64) (local $e f64)
    (local.set $ls (f64.const -inf))
    (local.set $mp (local.get $mat))
    (local.set $qend (i32.add (local.get $q) (i32.shl (local.get $qstride) (i32.const 1))))
    (block $done
      (br_if $done (i32.eqz (local.get $n)))
      (loop $blocks
        (local.set $acc0 (v128.const i32x4 0 0 0 0))
        (local.set $acc1 (v128.const i32x4 0 0 0 0))
        (local.set $acc2 (v128.const i32x4 0 0 0 0))
        (local.set $acc3 (v128.const i32x4 0 0 0 0))
        (local.set $qp (local.get $q))
        ;; slot k's first chunk: mp + 8k
        (local.set $p0 (i32.add (local.get $mp) (i32.const 0)))
        (local.set $p1 (i32.add (local.get $mp) (i32.const 8)))
        (local.set $p2 (i32.add (local.get $mp) (i32.const 16)))
        (local.set $p3 (i32.add (local.get $mp) (i32.const 24)))
        (loop $chunks
          ;; chunk 0 of this step: probe elements [qp, qp + 16 bytes)
          (local.set $pv (v128.load (local.get $qp)))
          (local.set $acc0 (i32x4.add (local.get $acc0) (i32x4.dot_i16x8_s (v128.load8x8_s (local.get $p0)) (local.get $pv))))
          (local.set $acc1 (i32x4.add (local.get $acc1) (i32x4.dot_i16x8_s (v128.load8x8_s (local.get $p1)) (local.get $pv))))
          (local.set $acc2 (i32x4.add (local.get $acc2) (i32x4.dot_i16x8_s (v128.load8x8_s (local.get $p2)) (local.get $pv))))
          (local.set $acc3 (i32x4.add (local.get $acc3) (i32x4.dot_i16x8_s (v128.load8x8_s (local.get $p3)) (local.get $pv))))
          ;; chunk 1: the next 8 elements, 32 bytes further in each slot's stream
          (local.set $pv (v128.load offset=16 (local.get $qp)))
          (local.set $acc0 (i32x4.add (local.get $acc0) (i32x4.dot_i16x8_s (v128.load8x8_s offset=32 (local.get $p0)) (local.get $pv))))
          (local.set $acc1 (i32x4.add (local.get $acc1) (i32x4.dot_i16x8_s (v128.load8x8_s offset=32 (local.get $p1)) (local.get $pv))))
          (local.set $acc2 (i32x4.add (local.get $acc2) (i32x4.dot_i16x8_s (v128.load8x8_s offset=32 (local.get $p2)) (local.get $pv))))
          (local.set $acc3 (i32x4.add (local.get $acc3) (i32x4.dot_i16x8_s (v128.load8x8_s offset=32 (local.get $p3)) (local.get $pv))))
          (local.set $p0 (i32.add (local.get $p0) (i32.const 64)))
          (local.set $p1 (i32.add (local.get $p1) (i32.const 64)))
          (local.set $p2 (i32.add (local.get $p2) (i32.const 64)))
          (local.set $p3 (i32.add (local.get $p3) (i32.const 64)))
          (local.set $qp (i32.add (local.get $qp) (i32.const 32)))
          (br_if $chunks (i32.lt_u (local.get $qp) (local.get $qend))))

        ;; Row r + 0 of the block (rows 1..3 below are the same with acc1..3,
        ;; offset=4k on out/scale/resid and r + k).
        (local.set $dsum (i32.add
          (i32.add (i32x4.extract_lane 0 (local.get $acc0)) (i32x4.extract_lane 1 (local.get $acc0)))
          (i32.add (i32x4.extract_lane 2 (local.get $acc0)) (i32x4.extract_lane 3 (local.get $acc0)))))
        (i32.store (local.get $out) (local.get $dsum))
        (if (i32.lt_u (i32.add (local.get $r) (i32.const 0)) (local.get $n))
          (then
            (local.set $a (f64.mul
              (f64.mul (f64.promote_f32 (f32.load (i32.add (local.get $scale) (i32.shl (local.get $r) (i32.const 2))))) (local.get $t))
              (f64.convert_i32_s (local.get $dsum))))
            (local.set $e (f64.add
              (f64.mul (f64.promote_f32 (f32.load (i32.add (local.get $resid) (i32.shl (local.get $r) (i32.const 2))))) (local.get $ka))
              (local.get $kc)))
            (if (f64.ge (f64.add (local.get $a) (local.get $e)) (local.get $ls))
              (then
                (i32.store (i32.add (local.get $cand) (i32.shl (local.get $nc) (i32.const 2))) (i32.add (local.get $r) (i32.const 0)))
                (local.set $nc (i32.add (local.get $nc) (i32.const 1)))
                (if (f64.gt (f64.sub (local.get $a) (local.get $e)) (local.get $ls))
                  (then (local.set $ls (f64.sub (local.get $a) (local.get $e)))))))))

        ;; Row r + 1
        (local.set $dsum (i32.add
          (i32.add (i32x4.extract_lane 0 (local.get $acc1)) (i32x4.extract_lane 1 (local.get $acc1)))
          (i32.add (i32x4.extract_lane 2 (local.get $acc1)) (i32x4.extract_lane 3 (local.get $acc1)))))
        (i32.store offset=4 (local.get $out) (local.get $dsum))
        (if (i32.lt_u (i32.add (local.get $r) (i32.const 1)) (local.get $n))
          (then
            (local.set $a (f64.mul
              (f64.mul (f64.promote_f32 (f32.load offset=4 (i32.add (local.get $scale) (i32.shl (local.get $r) (i32.const 2))))) (local.get $t))
              (f64.convert_i32_s (local.get $dsum))))
            (local.set $e (f64.add
              (f64.mul (f64.promote_f32 (f32.load offset=4 (i32.add (local.get $resid) (i32.shl (local.get $r) (i32.const 2))))) (local.get $ka))
              (local.get $kc)))
            (if (f64.ge (f64.add (local.get $a) (local.get $e)) (local.get $ls))
              (then
                (i32.store (i32.add (local.get $cand) (i32.shl (local.get $nc) (i32.const 2))) (i32.add (local.get $r) (i32.const 1)))
                (local.set $nc (i32.add (local.get $nc) (i32.const 1)))
                (if (f64.gt (f64.sub (local.get $a) (local.get $e)) (local.get $ls))
                  (then (local.set $ls (f64.sub (local.get $a) (local.get $e)))))))))

        ;; Row r + 2
        (local.set $dsum (i32.add
          (i32.add (i32x4.extract_lane 0 (local.get $acc2)) (i32x4.extract_lane 1 (local.get $acc2)))
          (i32.add (i32x4.extract_lane 2 (local.get $acc2)) (i32x4.extract_lane 3 (local.get $acc2)))))
        (i32.store offset=8 (local.get $out) (local.get $dsum))
        (if (i32.lt_u (i32.add (local.get $r) (i32.const 2)) (local.get $n))
          (then
            (local.set $a (f64.mul
              (f64.mul (f64.promote_f32 (f32.load offset=8 (i32.add (local.get $scale) (i32.shl (local.get $r) (i32.const 2))))) (local.get $t))
              (f64.convert_i32_s (local.get $dsum))))
            (local.set $e (f64.add
              (f64.mul (f64.promote_f32 (f32.load offset=8 (i32.add (local.get $resid) (i32.shl (local.get $r) (i32.const 2))))) (local.get $ka))
              (local.get $kc)))
            (if (f64.ge (f64.add (local.get $a) (local.get $e)) (local.get $ls))
              (then
                (i32.store (i32.add (local.get $cand) (i32.shl (local.get $nc) (i32.const 2))) (i32.add (local.get $r) (i32.const 2)))
                (local.set $nc (i32.add (local.get $nc) (i32.const 1)))
                (if (f64.gt (f64.sub (local.get $a) (local.get $e)) (local.get $ls))
                  (then (local.set $ls (f64.sub (local.get $a) (local.get $e)))))))))

        ;; Row r + 3
        (local.set $dsum (i32.add
          (i32.add (i32x4.extract_lane 0 (local.get $acc3)) (i32x4.extract_lane 1 (local.get $acc3)))
          (i32.add (i32x4.extract_lane 2 (local.get $acc3)) (i32x4.extract_lane 3 (local.get $acc3)))))
        (i32.store offset=12 (local.get $out) (local.get $dsum))
        (if (i32.lt_u (i32.add (local.get $r) (i32.const 3)) (local.get $n))
          (then
            (local.set $a (f64.mul
              (f64.mul (f64.promote_f32 (f32.load offset=12 (i32.add (local.get $scale) (i32.shl (local.get $r) (i32.const 2))))) (local.get $t))
              (f64.convert_i32_s (local.get $dsum))))
            (local.set $e (f64.add
              (f64.mul (f64.promote_f32 (f32.load offset=12 (i32.add (local.get $resid) (i32.shl (local.get $r) (i32.const 2))))) (local.get $ka))
              (local.get $kc)))
            (if (f64.ge (f64.add (local.get $a) (local.get $e)) (local.get $ls))
              (then
                (i32.store (i32.add (local.get $cand) (i32.shl (local.get $nc) (i32.const 2))) (i32.add (local.get $r) (i32.const 3)))
                (local.set $nc (i32.add (local.get $nc) (i32.const 1)))
                (if (f64.gt (f64.sub (local.get $a) (local.get $e)) (local.get $ls))
                  (then (local.set $ls (f64.sub (local.get $a) (local.get $e)))))))))

        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        ;; slot 0 has walked the whole block (qstride/8 chunks x 32 bytes = 4*qstride): the next block
        (local.set $mp (local.get $p0))
        (local.set $r (i32.add (local.get $r) (i32.const 4)))
        (br_if $blocks (i32.lt_u (local.get $r) (local.get $n)))))
    (f64.store (local.get $lsOut) (local.get $ls))
    (local.get $nc)))
