// Progressive enhancement only: every page works without this file.
// Copy buttons: <button class="copy" data-copy="ELEMENT-ID" hidden> copies that element's text.
// <form data-autosubmit> submits itself (an HTTP-POST binding hop), as an IdP's page does; its
// own button does it without JavaScript.
(function () {
  "use strict";
  function copy(button) {
    var target = document.getElementById(button.getAttribute("data-copy"));
    if (!target) { return; }
    var text = target.value !== undefined && target.tagName === "INPUT" ? target.value : target.textContent;
    var label = button.firstChild;
    var original = label.nodeValue;
    function said(word) {
      label.nodeValue = word;
      window.setTimeout(function () { label.nodeValue = original; }, 1500);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text.trim()).then(function () { said("Copied"); }, function () { said("Copy failed"); });
    } else {
      // Plain http (development): select the text and use the legacy command.
      var range = document.createRange();
      range.selectNodeContents(target);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      said(document.execCommand("copy") ? "Copied" : "Press Ctrl+C");
    }
  }
  function ready() {
    var form = document.querySelector("form[data-autosubmit]");
    if (form) { form.submit(); }
    var buttons = document.querySelectorAll("button.copy[data-copy]");
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].hidden = false;
      buttons[i].addEventListener("click", function (event) { copy(event.currentTarget); });
    }
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", ready);
  } else {
    ready();
  }
})();
