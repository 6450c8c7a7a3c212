// The demo page of `wecom-oidc dev` (/demo/, a confidential client inside the provider), in
// Chromium: sign in, pick 张三 in the simulated WeCom, and see her claims — in Chinese, so the
// screenshot needs a CJK font (fonts-wqy-zenhei; make browser installs it).
//
// Run: make e2e   (or, after make build and npm ci in e2e/: npm test)

import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'

import { scenario, see, setup, waitForPath } from './harness.mjs'

const env = setup()

scenario(env, 'the dev demo page: sign in, click 张三, and see her name, e-mail and groups', 'demo', async (page) => {
  let fonts = ''
  try {
    fonts = execFileSync('fc-list', [':lang=zh', 'family'], { encoding: 'utf8', timeout: 5_000 })
  } catch {}
  assert.ok(fonts.trim(), 'a Chinese font is installed, or 张三 renders as boxes (make browser installs fonts-wqy-zenhei)')

  await page.goto(env.issuer + '/demo/')
  await see(page, '#signin', '使用企业微信登录 · Sign in with WeCom')
  await page.locator('#signin').click()
  await waitForPath(page, env.issuer, '/_wecomsim/wwlogin/sso/login')
  await page.locator('a[data-userid="zhangsan"]').click()
  await waitForPath(page, env.issuer, '/demo/callback')
  await see(page, '#welcome', '你好，张三')
  await see(page, '#claim-name', '张三')
  await see(page, '#claim-preferred-username', 'zhangsan')
  await see(page, '#claim-email', 'zhangsan@corp.example')
  await see(page, '#claim-groups', /(^|, )研发中心(, |$)/)
  await see(page, '#claim-groups', /(^|, )平台组(, |$)/)
  await see(page, '#userinfo', /"name": "张三"/)
})
