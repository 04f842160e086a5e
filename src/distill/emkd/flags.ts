/** student:train's EMKD flags, as the hooks read them (src/distill/options.ts defines them). */
export interface EmkdFlags {
  emkd: number;
  /** What the finished run serves: 'member' (network 1, the default) or 'ensemble' (the K networks' average). */
  serve?: string;
  emkdMaskRatio: number;
  emkdTemperature: number;
  emkdViews: number;
  lambdaEmkdMask: number;
  lambdaEmkdAttr: number;
  lambdaEmkdIntra: number;
  lambdaEmkdInter: number;
  lambdaEmkdKl: number;
}

export const EMKD_TERMS = { emkd_mask: 'lambdaEmkdMask', emkd_attr: 'lambdaEmkdAttr', emkd_intra: 'lambdaEmkdIntra', emkd_inter: 'lambdaEmkdInter', emkd_kl: 'lambdaEmkdKl' } as const;
export type EmkdTerm = keyof typeof EMKD_TERMS | 'emkd_ce';
