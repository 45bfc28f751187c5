// Open a `dvc plots show` page in headless Chromium with every non-file request refused, and
// report how many vega plots drew, how many images loaded, and any error: the page must work offline.
import chromium from "@sparticuz/chromium";
import puppeteer from "puppeteer-core";

const browser = await puppeteer.launch({
  args: [...chromium.args, "--no-sandbox"], executablePath: await chromium.executablePath(), headless: true,
});
const page = await browser.newPage();
const outside = [], errors = [];
await page.setRequestInterception(true);
page.on("request", (request) => {
  if (/^(file|data|blob):/.test(request.url())) return request.continue();
  outside.push(request.url());
  request.abort();
});
page.on("pageerror", (error) => errors.push(String(error)));
page.on("console", (message) => { if (message.type() === "error") errors.push(message.text()); });
await page.goto(process.argv[2], { waitUntil: "networkidle0", timeout: 60000 });
const counts = await page.evaluate(() => ({
  vega: document.querySelectorAll(".vega-embed").length,
  drawn: [...document.querySelectorAll(".vega-embed")].filter((e) => e.querySelector("canvas, svg.marks")).length,
  images: document.querySelectorAll("img").length,
  loaded: [...document.querySelectorAll("img")].filter((i) => i.complete && i.naturalWidth > 0).length,
}));
console.log(JSON.stringify({ ...counts, errors, outside }));
await browser.close();
